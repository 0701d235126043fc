"""The vllm backend without vLLM: SamplingParams translation, prompt rendering and output parsing against stand-ins
shaped like vLLM's RequestOutput / CompletionOutput / Logprob; plus a real-engine test that needs vLLM and a GPU."""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass, field
from typing import Any

import pytest

from selfcorrect.backends import load_backend
from selfcorrect.backends.base import GenerationRequest, SamplingParams
from selfcorrect.backends.vllm import VLLMBackend, parse_outputs, sampled_logprobs, vllm_sampling_params
from selfcorrect.errors import SelfCorrectError

os.environ.setdefault("HF_HUB_OFFLINE", "1")
HAS_VLLM = importlib.util.find_spec("vllm") is not None


@dataclass
class FakeSamplingParams:
    """vllm.SamplingParams' fields that `to_vllm` sets."""

    temperature: float
    top_p: float
    max_tokens: int
    n: int
    seed: int | None
    stop: list[str] | None
    logprobs: int | None


@dataclass
class Logprob:
    logprob: float
    rank: int | None = None
    decoded_token: str | None = None


@dataclass
class CompletionOutput:
    index: int
    text: str
    token_ids: list[int]
    cumulative_logprob: float | None
    logprobs: list[dict[int, Logprob]] | None
    finish_reason: str | None = None
    stop_reason: int | str | None = None


@dataclass
class RequestOutput:
    request_id: str
    prompt_token_ids: list[int]
    outputs: list[CompletionOutput]
    finished: bool = True


@dataclass
class FakeLLM:
    """Records what it was asked; answers sample k of request i with text f"r{i}s{k}" (outputs shuffled)."""

    tokenizer: Any
    calls: list[tuple[list[dict], list[FakeSamplingParams]]] = field(default_factory=list)

    def get_tokenizer(self):
        return self.tokenizer

    def generate(self, prompts, sampling_params, use_tqdm=True):
        self.calls.append((prompts, sampling_params))
        outputs = []
        for i, (prompt, params) in enumerate(zip(prompts, sampling_params, strict=True)):
            samples = [CompletionOutput(index=k, text=f"r{i}s{k}", token_ids=[10 + k, 2],
                                        cumulative_logprob=-1.5,
                                        logprobs=[{10 + k: Logprob(-1.0), 99: Logprob(-3.0)}, {2: Logprob(-0.5)}],
                                        finish_reason="length" if k else "stop")
                       for k in range(params.n)]
            outputs.append(RequestOutput(str(i), prompt["prompt_token_ids"], samples[::-1]))
        return outputs


@pytest.fixture(scope="module")
def llama_tokenizer():
    from selfcorrect.testing.tiny_hf import build_tokenizer

    return build_tokenizer("llama")


def test_sampling_params_translate_field_for_field():
    params = SamplingParams(temperature=0.7, top_p=0.9, max_new_tokens=33, n=4, seed=123, stop=("\n",))
    assert vllm_sampling_params(params, FakeSamplingParams) == FakeSamplingParams(
        temperature=0.7, top_p=0.9, max_tokens=33, n=4, seed=123, stop=["\n"], logprobs=0)
    assert vllm_sampling_params(SamplingParams(), FakeSamplingParams).stop is None


def test_generate_sends_one_call_with_template_token_ids_and_per_request_params(llama_tokenizer):
    llm = FakeLLM(llama_tokenizer)
    backend = VLLMBackend.from_llm(llm, FakeSamplingParams, "tiny-llama")
    chat = [{"role": "user", "content": "What is 2 + 3?"}]
    requests = [GenerationRequest(SamplingParams(n=2, seed=1), messages=chat),
                GenerationRequest(SamplingParams(temperature=1.0, seed=2), prompt="Alice has")]
    gens = backend.generate(requests)
    [(prompts, params)] = llm.calls
    expected_chat = llama_tokenizer.apply_chat_template(chat, add_generation_prompt=True, tokenize=True,
                                                        return_dict=True)["input_ids"]
    assert prompts[0]["prompt_token_ids"] == expected_chat
    assert expected_chat.count(llama_tokenizer.bos_token_id) == 1  # the template's BOS, not a second one
    assert prompts[1]["prompt_token_ids"] == llama_tokenizer("Alice has")["input_ids"]
    assert [(p.n, p.seed, p.temperature) for p in params] == [(2, 1, 0.0), (1, 2, 1.0)]
    assert [(g.text, g.request_index, g.sample_index, g.finish_reason) for g in gens] == [
        ("r0s0", 0, 0, "stop"), ("r0s1", 0, 1, "length"), ("r1s0", 1, 0, "stop")]
    assert gens[1].token_ids == [11, 2] and gens[1].token_logprobs == [-1.0, -0.5]
    assert backend.model_id == "tiny-llama"


def test_outputs_without_logprobs_and_miscounted_outputs():
    completion = CompletionOutput(index=0, text="x", token_ids=[5], cumulative_logprob=None, logprobs=None)
    assert sampled_logprobs(completion) is None
    request = GenerationRequest(SamplingParams(n=2), prompt="p")
    with pytest.raises(RuntimeError, match="1 samples for n=2"):
        parse_outputs([RequestOutput("0", [1], [completion])], [request])


def test_hidden_states_are_refused_with_a_pointer_to_hf(llama_tokenizer):
    backend = VLLMBackend.from_llm(FakeLLM(llama_tokenizer), FakeSamplingParams, "m")
    with pytest.raises(SelfCorrectError, match="use the hf backend"):
        backend.generate([GenerationRequest(SamplingParams(), prompt="p", hidden_layers=(-1,))])


@pytest.mark.skipif(HAS_VLLM, reason="vllm is installed here")
def test_without_vllm_the_backend_says_how_to_install_it():
    with pytest.raises(SelfCorrectError, match=r"pip install 'selfcorrect\[vllm\]' on a machine with a CUDA GPU"):
        load_backend("vllm", model="some/model")


def _why_no_real_vllm() -> str | None:
    if not HAS_VLLM:
        return "vllm is not installed (pip install 'selfcorrect[vllm]' on a machine with a CUDA GPU)"
    import torch

    return None if torch.cuda.is_available() else "vLLM needs a CUDA GPU and none is visible"


@pytest.mark.vllm
@pytest.mark.gpu
@pytest.mark.slow
@pytest.mark.skipif(_why_no_real_vllm() is not None, reason=str(_why_no_real_vllm()))
def test_real_vllm_answers_a_round_with_seeded_samples_and_logprobs(tmp_path):
    from selfcorrect.testing.tiny_hf import build_tiny_model

    folder = build_tiny_model("llama", tmp_path / "tiny-llama")
    backend = VLLMBackend(str(folder), gpu_memory_utilization=0.2, max_model_len=512)
    requests = [GenerationRequest(SamplingParams(temperature=1.0, max_new_tokens=8, n=3, seed=s),
                                  messages=[{"role": "user", "content": f"What is {s} + 1?"}]) for s in range(4)]
    first, again = backend.generate(requests), backend.generate(requests[::-1])
    assert len(first) == 12 and all(g.token_logprobs is not None for g in first)
    assert all(len(g.token_logprobs) == len(g.token_ids) for g in first)
    by_request = {(g.request_index, g.sample_index): g.token_ids for g in first}
    assert {(3 - g.request_index, g.sample_index): g.token_ids for g in again} == by_request  # seeds, not order
