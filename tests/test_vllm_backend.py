"""The vllm backend without vLLM: SamplingParams translation, prompt rendering, output parsing and the engine's own
process, against a stand-in (tests/vllm_standin.py) that validates requests as vLLM does; plus a real-engine test
that needs vLLM and a GPU (run by benchmarks/gpu_check.sh)."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest

import vllm_standin as standin
from selfcorrect.backends import load_backend
from selfcorrect.backends.base import GenerationRequest, SamplingParams, request_seed
from selfcorrect.backends.vllm import VLLMBackend, parse_outputs
from selfcorrect.backends.vllm_engine import EngineProcess, plain_outputs
from selfcorrect.config import build_config
from selfcorrect.errors import SelfCorrectError
from selfcorrect.methods.insec import InSeCConfig
from selfcorrect.methods.session import EvalConfig
from selfcorrect.methods.stasc import STaSCConfig

os.environ.setdefault("HF_HUB_OFFLINE", "1")
HAS_VLLM = importlib.util.find_spec("vllm") is not None


@pytest.fixture(scope="module")
def llama_tokenizer():
    from selfcorrect.testing.tiny_hf import build_tokenizer

    return build_tokenizer("llama")


def _backend(tokenizer, **llm_options) -> tuple[VLLMBackend, standin.LLM]:
    llm = standin.LLM(tokenizer=tokenizer, **llm_options)
    return VLLMBackend.from_llm(llm, standin.SamplingParams, "tiny-llama"), llm


def test_sampling_params_translate_field_for_field():
    params = SamplingParams(temperature=0.7, top_p=0.9, max_new_tokens=33, n=4, seed=123, stop=("\n",))
    assert standin.SamplingParams(**params.to_vllm()) == standin.SamplingParams(
        temperature=0.7, top_p=0.9, max_tokens=33, n=4, seed=123, stop=["\n"], logprobs=0)
    assert standin.SamplingParams(**SamplingParams(temperature=1.0).to_vllm()).stop == []


def test_the_standin_refuses_what_vllm_refuses():
    for bad in ({"temperature": 0.0, "n": 2}, {"temperature": 2.5}, {"temperature": -1.0},
                {"temperature": float("nan")}, {"top_p": 0.0}, {"max_tokens": 0}, {"stop": ["a", ""]},
                {"logprobs": -2}):
        with pytest.raises(ValueError):
            standin.SamplingParams(**bad)
    assert standin.SamplingParams(temperature=0.005).temperature == 0.01  # vLLM raises it silently
    with pytest.raises(TypeError):
        standin.SamplingParams(max_new_tokens=3)  # our field name, not vLLM's


def test_greedy_with_n_samples_is_drawn_once_and_repeated(llama_tokenizer):
    backend, llm = _backend(llama_tokenizer)
    gens = backend.generate([GenerationRequest(SamplingParams(n=3, seed=5), prompt="Alice has")])
    [(_, [sent])] = llm.calls
    assert (sent.n, sent.temperature) == (1, 0.0)  # what vLLM accepts
    assert [(g.text, g.sample_index, g.request_index) for g in gens] == [("r0s0", 0, 0), ("r0s0", 1, 0),
                                                                         ("r0s0", 2, 0)]
    gens[1].token_ids.append(0)
    assert gens[0].token_ids == gens[2].token_ids == [10, 2]  # copies, not one list shared three times


@pytest.mark.parametrize("temperature", [2.5, 0.005, -0.1, float("nan")])
def test_temperatures_vllm_would_refuse_or_alter_are_refused_for_every_backend(temperature):
    with pytest.raises(ValueError, match=r"temperature must be 0 \(greedy\) or in \[0.01, 2\]"):
        SamplingParams(temperature=temperature)
    with pytest.raises(ValueError, match="stop strings must not be empty"):
        SamplingParams(stop=("\n", ""))


@pytest.mark.parametrize(("config_class", "key"), [(EvalConfig, "temperature"), (STaSCConfig, "eval_temperatures"),
                                                   (STaSCConfig, "select_temperature"),
                                                   (InSeCConfig, "sample_temperature")])
def test_a_bad_temperature_fails_when_the_config_is_read_in_one_line(config_class, key):
    value = [1.0, 3.0] if key == "eval_temperatures" else 3.0
    with pytest.raises(SelfCorrectError) as caught:
        build_config(config_class, {key: value}, "run.yaml")
    assert str(caught.value).startswith(f"run.yaml: config key '{key}")
    assert "temperature must be 0 (greedy) or in [0.01, 2], got 3" in str(caught.value)
    assert "\n" not in str(caught.value)


def test_generate_sends_one_call_with_template_token_ids_and_per_request_params(llama_tokenizer):
    backend, llm = _backend(llama_tokenizer)
    chat = [{"role": "user", "content": "What is 2 + 3?"}]
    requests = [GenerationRequest(SamplingParams(temperature=0.7, n=2, seed=1), messages=chat),
                GenerationRequest(SamplingParams(temperature=1.0, seed=2), prompt="Alice has")]
    gens = backend.generate(requests)
    [(prompts, params)] = llm.calls
    expected_chat = llama_tokenizer.apply_chat_template(chat, add_generation_prompt=True, tokenize=True,
                                                        return_dict=True)["input_ids"]
    assert prompts[0]["prompt_token_ids"] == expected_chat
    assert expected_chat.count(llama_tokenizer.bos_token_id) == 1  # the template's BOS, not a second one
    assert prompts[1]["prompt_token_ids"] == llama_tokenizer("Alice has")["input_ids"]
    assert [(p.n, p.seed, p.temperature, p.logprobs) for p in params] == [(2, 1, 0.7, 0), (1, 2, 1.0, 0)]
    assert [(g.text, g.request_index, g.sample_index, g.finish_reason) for g in gens] == [
        ("r0s0", 0, 0, "stop"), ("r0s1", 0, 1, "length"), ("r1s0", 1, 0, "stop")]
    assert gens[1].token_ids == [11, 2] and gens[1].token_logprobs == [-1.0, -0.5]
    assert backend.model_id == "tiny-llama"


@pytest.mark.parametrize("reason", ["abort", "error", "repetition", None])
def test_a_completion_that_did_not_stop_or_run_out_of_length_stops_the_round(llama_tokenizer, reason):
    backend, _ = _backend(llama_tokenizer, finish_reason=reason)
    with pytest.raises(SelfCorrectError, match=f"ended with finish reason {reason!r}, not 'stop' or 'length'"):
        backend.generate([GenerationRequest(SamplingParams(temperature=1.0), prompt="p")])


def test_outputs_without_logprobs_and_miscounted_outputs():
    completion = standin.CompletionOutput(index=0, text="x", token_ids=[5], cumulative_logprob=None, logprobs=None,
                                          finish_reason="stop")
    [[record]] = plain_outputs([standin.RequestOutput("0", [1], [completion])])
    assert record["token_logprobs"] is None and record["finish_reason"] == "stop"
    request = GenerationRequest(SamplingParams(temperature=1.0, n=2), prompt="p")
    with pytest.raises(RuntimeError, match="1 samples for n=2"):
        parse_outputs([[record]], [request])


def test_hidden_states_are_refused_with_a_pointer_to_hf(llama_tokenizer):
    backend, _ = _backend(llama_tokenizer)
    with pytest.raises(SelfCorrectError, match="use the hf backend"):
        backend.generate([GenerationRequest(SamplingParams(), prompt="p", hidden_layers=(-1,))])


def test_the_engine_process_answers_over_its_pipe_and_closing_ends_it():
    engine = EngineProcess({"model": "m", "seed": 3}, module="vllm_standin")
    try:
        params = SamplingParams(temperature=1.0, n=2, seed=9).to_vllm()
        [completions] = engine.generate([{"prompt_token_ids": [1, 2]}], [params])
        assert [(c["index"], c["text"], c["finish_reason"]) for c in completions] == [(0, "r0s0", "stop"),
                                                                                      (1, "r0s1", "length")]
        with pytest.raises(SelfCorrectError, match="generating failed: VLLMValidationError: n must be 1 when "
                                                   "using greedy sampling, got 2"):
            engine.generate([{"prompt_token_ids": [1]}], [{**params, "temperature": 0.0}])
        with pytest.raises(SelfCorrectError, match="generating failed: ValueError: the stand-in refuses"):
            engine.generate([{"prompt_token_ids": standin.FAIL}], [params])
        assert engine.alive  # a refused request does not take the engine down
    finally:
        engine.close()
    assert not engine.alive and engine._process.exitcode == 0  # the process, and its memory, are gone
    with pytest.raises(SelfCorrectError, match="the engine is closed"):
        engine.generate([{"prompt_token_ids": [1]}], [params])


def test_the_backend_over_an_engine_process_translates_greedy_n_and_close_ends_the_process(llama_tokenizer):
    backend = VLLMBackend.from_engine(EngineProcess({"model": "m"}, module="vllm_standin"), llama_tokenizer, "m")
    gens = backend.generate([GenerationRequest(SamplingParams(n=2), prompt="Alice has"),
                             GenerationRequest(SamplingParams(temperature=1.0, n=2), prompt="Bob has")])
    assert [(g.request_index, g.sample_index, g.text) for g in gens] == [(0, 0, "r0s0"), (0, 1, "r0s0"),
                                                                         (1, 0, "r1s0"), (1, 1, "r1s1")]
    backend.close()
    assert not backend.engine.alive


def test_an_engine_left_open_ends_with_the_interpreter(tmp_path):
    import subprocess
    import sys

    script = tmp_path / "left_open.py"
    script.write_text("import sys\n"
                      f"sys.path.insert(0, {str(Path(__file__).parent)!r})\n"
                      "from selfcorrect.backends.vllm_engine import EngineProcess\n"
                      "if __name__ == '__main__':\n"
                      "    print(EngineProcess({'model': 'm'}, module='vllm_standin').pid)\n")
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=60,
                          env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    assert done.returncode == 0, done.stderr
    with pytest.raises(ProcessLookupError):
        os.kill(int(done.stdout.split()[-1]), 0)


def test_an_engine_that_dies_or_cannot_start_is_one_line():
    engine = EngineProcess({"model": "m"}, module="vllm_standin")
    with pytest.raises(SelfCorrectError, match=r"the engine process died while generating \(exit code 7\)"):
        engine.generate([{"prompt_token_ids": standin.CRASH}], [SamplingParams(temperature=1.0).to_vllm()])
    engine.close()
    with pytest.raises(SelfCorrectError, match=r"starting the engine failed: TypeError: .*no_such_option"):
        EngineProcess({"model": "m", "no_such_option": 1}, module="vllm_standin")


@pytest.mark.skipif(HAS_VLLM, reason="vllm is installed here")
def test_without_vllm_the_backend_says_how_to_install_it():
    with pytest.raises(SelfCorrectError, match=r"pip install 'selfcorrect\[vllm\]' on a machine with a CUDA GPU"):
        load_backend("vllm", model="some/model")


def _why_no_real_vllm() -> str | None:
    if not HAS_VLLM:
        return "vllm is not installed (pip install 'selfcorrect[vllm]' on a machine with a CUDA GPU)"
    import torch

    return None if torch.cuda.is_available() else "vLLM needs a CUDA GPU and none is visible"


def real_vllm(test):
    """Marks a test that needs vLLM and a CUDA GPU (benchmarks/gpu_check.sh runs them)."""
    for mark in (pytest.mark.vllm, pytest.mark.gpu, pytest.mark.slow,
                 pytest.mark.skipif(_why_no_real_vllm() is not None, reason=str(_why_no_real_vllm()))):
        test = mark(test)
    return test


def _real_model(folder: Path) -> str:
    """$SELFCORRECT_VLLM_TEST_MODEL (a model folder: the GPU check passes SmolLM2) or a tiny random Llama built in
    `folder` (head size 16, which not every vLLM attention kernel takes)."""
    from selfcorrect.testing.tiny_hf import build_tiny_model

    given = os.environ.get("SELFCORRECT_VLLM_TEST_MODEL")
    return given if given else str(build_tiny_model("llama", folder / "tiny-llama"))


@pytest.fixture(scope="module")
def real_backend(tmp_path_factory):
    model = _real_model(tmp_path_factory.mktemp("tiny"))
    backend = VLLMBackend(model, gpu_memory_utilization=0.2, max_model_len=512, enforce_eager=True)
    yield backend
    backend.close()


def _sampled_round(count: int = 4) -> list[GenerationRequest]:
    # hashed seeds, as runs use: vLLM draws sample k from seed + k, so neighbouring seeds would share streams
    return [GenerationRequest(SamplingParams(temperature=1.0, max_new_tokens=8, n=3, seed=request_seed(7, i)),
                              messages=[{"role": "user", "content": f"What is {i} + 1?"}]) for i in range(count)]


@real_vllm
def test_real_vllm_answers_a_round_with_seeded_samples_and_logprobs(real_backend):
    requests = _sampled_round()
    first, again = real_backend.generate(requests), real_backend.generate(requests)
    assert len(first) == 12 and all(g.token_logprobs is not None for g in first)  # logprobs=0 gives the sampled one
    assert all(len(g.token_logprobs) == len(g.token_ids) and max(g.token_logprobs) <= 0 for g in first)
    assert [g.token_ids for g in again] == [g.token_ids for g in first]  # same batch, same seeds: same samples
    assert len({tuple(g.token_ids) for g in first}) > 1
    greedy = real_backend.generate([GenerationRequest(SamplingParams(max_new_tokens=8, n=3), prompt="Alice has")])
    assert len(greedy) == 3 and len({tuple(g.token_ids) for g in greedy}) == 1  # n=3 at T=0: one answer, repeated


@real_vllm
@pytest.mark.skipif(os.environ.get("VLLM_BATCH_INVARIANT") != "1", reason="vLLM promises a sample independent "
                    "of its batch only with VLLM_BATCH_INVARIANT=1")
def test_real_vllm_batch_invariant_samples_do_not_depend_on_their_batch(real_backend):
    requests = _sampled_round()
    alone = real_backend.generate(requests[:1])
    reversed_round = real_backend.generate(requests[::-1])
    assert [g.token_ids for g in reversed_round if g.request_index == 3] == [g.token_ids for g in alone]


@real_vllm
def test_real_vllm_close_returns_the_gpu_memory(tmp_path):
    import torch

    model = _real_model(tmp_path)
    before = torch.cuda.mem_get_info()[0]
    backend = VLLMBackend(model, gpu_memory_utilization=0.3, max_model_len=512, enforce_eager=True)
    held = before - torch.cuda.mem_get_info()[0]
    backend.close()
    after = torch.cuda.mem_get_info()[0]
    assert held > 0.2 * torch.cuda.mem_get_info()[1]  # the engine took its share of the GPU...
    assert before - after < 2**30  # ...and gave it all back (within 1 GiB) when closed
