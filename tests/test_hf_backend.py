"""The hf backend's decode loop against transformers itself: same greedy tokens as `generate`, logprobs and hidden
states equal to a plain forward pass, and samples that belong to the request, not to the batch it came in."""

from __future__ import annotations

import os
import shutil

import pytest

from selfcorrect.backends.base import GenerationRequest, SamplingParams
from selfcorrect.errors import SelfCorrectError

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")

PROMPTS = ["Alice has", "Question: how many birds does Carol have?\nAnswer:", "12 + 7 =", "Then the final result is"]
SAMPLED = SamplingParams(temperature=1.0, top_p=0.9, max_new_tokens=16, seed=7)


@pytest.fixture(scope="module")
def tiny_root(tmp_path_factory):
    return tmp_path_factory.mktemp("tiny-models")


@pytest.fixture(scope="module")
def backends(tiny_root):
    """One backend per architecture, loaded from its folder as a user would."""
    import torch

    from selfcorrect.backends.hf import HFBackend
    from selfcorrect.testing.tiny_hf import tiny_model_dir

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield {arch: HFBackend(str(tiny_model_dir(arch, tiny_root)), dtype="float32") for arch in ("gpt2", "llama")}
    torch.set_num_threads(threads)


def _prompt(text: str, params: SamplingParams = SAMPLED, **kwargs) -> GenerationRequest:
    return GenerationRequest(params, prompt=text, **kwargs)


@pytest.mark.slow
@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_greedy_equals_hf_generate_with_left_padding(backends, arch):
    backend = backends[arch]
    params = SamplingParams(max_new_tokens=20)
    gens = backend.generate([_prompt(p, params) for p in PROMPTS])

    encoded = backend.tokenizer(PROMPTS, return_tensors="pt", padding=True)
    assert len({len(backend.tokenizer(p)["input_ids"]) for p in PROMPTS}) > 1  # padding really happens
    reference = backend.model.generate(**encoded, do_sample=False, max_new_tokens=20)
    for gen, row in zip(gens, reference[:, encoded["input_ids"].shape[1]:].tolist(), strict=True):
        ends = [i for i, token in enumerate(row) if token in backend.eos_ids]
        expected = row[:ends[0] + 1] if ends else row
        assert gen.token_ids == expected
        assert gen.finish_reason == ("stop" if ends else "length")


@pytest.mark.slow
def test_chat_messages_render_through_the_template_without_a_second_bos(backends):
    backend = backends["llama"]
    messages = [{"role": "user", "content": "What is 2 + 3?"}]
    ids = backend.prompt_ids(GenerationRequest(SAMPLED, messages=messages))
    assert ids == backend.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True,
                                                        return_dict=True)["input_ids"]
    assert ids.count(backend.tokenizer.bos_token_id) == 1


@pytest.mark.slow
@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_a_sample_does_not_depend_on_its_batch(backends, arch):
    backend = backends[arch]
    alone = backend.generate([_prompt(PROMPTS[1])])[0]
    others = [_prompt(PROMPTS[0], SamplingParams(temperature=0.7, max_new_tokens=30, seed=1)),
              _prompt(PROMPTS[1]),
              _prompt(PROMPTS[3], SamplingParams(max_new_tokens=5))]
    in_batch = backend.generate(others)[1]
    assert in_batch.token_ids == alone.token_ids
    assert in_batch.text == alone.text
    reseeded = backend.generate([_prompt(PROMPTS[1], SamplingParams(temperature=1.0, top_p=0.9,
                                                                      max_new_tokens=16, seed=8))])[0]
    assert reseeded.token_ids != alone.token_ids


@pytest.mark.slow
def test_chunking_does_not_change_samples(backends):
    from selfcorrect.backends.hf import HFBackend

    backend = backends["llama"]
    requests = [_prompt(p, SamplingParams(temperature=1.0, max_new_tokens=8, seed=i)) for i, p in enumerate(PROMPTS)]
    small = HFBackend.from_objects(backend.model, backend.tokenizer, batch_size=3)
    assert [g.token_ids for g in small.generate(requests)] == [g.token_ids for g in backend.generate(requests)]


@pytest.mark.slow
def test_n_samples_are_distinct_and_ordered(backends):
    backend = backends["llama"]
    params = SamplingParams(temperature=1.0, max_new_tokens=12, n=2, seed=3)
    gens = backend.generate([_prompt(PROMPTS[0], params), _prompt(PROMPTS[2], params)])
    assert [(g.request_index, g.sample_index) for g in gens] == [(0, 0), (0, 1), (1, 0), (1, 1)]
    assert gens[0].token_ids != gens[1].token_ids
    single = backend.generate([_prompt(PROMPTS[2], SamplingParams(temperature=1.0, max_new_tokens=12, seed=3))])
    assert single[0].token_ids == gens[2].token_ids  # sample 0 of n is the sample of n=1


@pytest.mark.slow
def test_samples_of_one_prompt_share_one_prefill(backends):
    """n samples of a request run their prompt once; each sample still continues its own prompt's cache."""
    backend = backends["llama"]
    widths = []
    hook = backend.model.register_forward_pre_hook(lambda _, args, kwargs: widths.append(kwargs["input_ids"].shape),
                                                   with_kwargs=True)
    params = SamplingParams(temperature=1.0, max_new_tokens=6, n=3, seed=5)
    try:
        gens = backend.generate([_prompt(PROMPTS[0], params), _prompt(PROMPTS[2], params)])
    finally:
        hook.remove()
    assert widths[0][0] == 2 and widths[1] == (6, 1)  # prefill: 2 distinct prompts; decode: all 6 rows
    alone = backend.generate([_prompt(PROMPTS[2], params)])
    assert [g.token_ids for g in gens[3:]] == [g.token_ids for g in alone]


@pytest.mark.slow
def test_stop_string_truncates_and_stops_early(backends):
    backend = backends["llama"]
    full = backend.generate([_prompt(PROMPTS[0], SamplingParams(max_new_tokens=16))])[0]
    middle = len(full.text) // 2
    stop = full.text[middle:middle + 2]
    assert stop.isprintable() and full.finish_reason == "length"
    cut = backend.generate([_prompt(PROMPTS[0], SamplingParams(max_new_tokens=16, stop=("\x00never", stop)))])[0]
    assert cut.text == full.text[:full.text.find(stop)]
    assert cut.finish_reason == "stop"
    assert len(cut.token_ids) < len(full.token_ids)
    assert cut.token_ids == full.token_ids[:len(cut.token_ids)]


@pytest.mark.slow
@pytest.mark.parametrize("params", [SamplingParams(max_new_tokens=12), SAMPLED], ids=["greedy", "sampled"])
def test_logprobs_and_entropies_match_a_teacher_forced_pass(backends, params):
    import torch

    backend = backends["llama"]
    gens = backend.generate([_prompt(p, params) for p in PROMPTS[:3]])
    for prompt, gen in zip(PROMPTS, gens, strict=False):
        prompt_ids = backend.tokenizer(prompt)["input_ids"]
        ids = torch.tensor([prompt_ids + gen.token_ids])
        with torch.inference_mode():
            logp = torch.log_softmax(backend.model(ids).logits[0, len(prompt_ids) - 1:-1].float(), dim=-1)
        chosen = logp.gather(1, torch.tensor(gen.token_ids)[:, None]).squeeze(1)
        entropy = -(logp.exp() * logp).sum(-1)
        assert torch.allclose(torch.tensor(gen.token_logprobs), chosen, atol=1e-4)
        assert torch.allclose(torch.tensor(gen.token_entropies), entropy, atol=1e-4)


@pytest.mark.slow
def test_hidden_states_equal_a_direct_forward_pass(backends):
    import torch

    backend = backends["gpt2"]
    layers = (0, 1, -1)
    gens = backend.generate([_prompt(PROMPTS[1], SamplingParams(max_new_tokens=2)),
                             _prompt(PROMPTS[0], SamplingParams(max_new_tokens=2), hidden_layers=layers)])
    assert gens[0].hidden_states is None
    with torch.inference_mode():
        direct = backend.model(torch.tensor([backend.tokenizer(PROMPTS[0])["input_ids"]]),
                               output_hidden_states=True).hidden_states
    assert set(gens[1].hidden_states) == set(layers)
    for layer in layers:
        state = torch.tensor(gens[1].hidden_states[layer])
        assert state.shape == (backend.model.config.hidden_size,)
        assert torch.allclose(state, direct[layer][0, -1], atol=1e-4)
    assert not torch.allclose(torch.tensor(gens[1].hidden_states[0]), torch.tensor(gens[1].hidden_states[-1]))


@pytest.mark.slow
def test_hidden_span_averages_the_last_prompt_tokens(backends):
    import torch

    backend = backends["gpt2"]
    ids = backend.tokenizer(PROMPTS[0])["input_ids"]
    gens = backend.generate([_prompt(PROMPTS[1], SamplingParams(max_new_tokens=2)),  # a longer batch mate: padding
                             GenerationRequest(params=SamplingParams(max_new_tokens=2), prompt=PROMPTS[0],
                                               hidden_layers=(1,), hidden_span=3)])
    with torch.inference_mode():
        direct = backend.model(torch.tensor([ids]), output_hidden_states=True).hidden_states[1][0]
    assert torch.allclose(torch.tensor(gens[1].hidden_states[1]), direct[-3:].mean(0), atol=1e-4)
    assert not torch.allclose(direct[-3:].mean(0), direct[-1], atol=1e-3)


@pytest.mark.slow
def test_hidden_layer_out_of_range_is_a_user_error(backends):
    with pytest.raises(SelfCorrectError, match="out of range"):
        backends["gpt2"].generate([_prompt(PROMPTS[0], hidden_layers=(7,))])


@pytest.mark.slow
def test_in_training_model_samples_in_eval_mode_and_stays_in_training(backends):
    from selfcorrect.backends.hf import HFBackend

    backend = backends["gpt2"]  # GPT-2 has dropout, so train mode would change the outputs
    requests = [_prompt(p) for p in PROMPTS]
    expected = [g.token_ids for g in backend.generate(requests)]
    backend.model.train()
    try:
        wrapped = HFBackend.from_objects(backend.model, backend.tokenizer, name="pretraining")
        assert [g.token_ids for g in wrapped.generate(requests)] == expected
        assert backend.model.training
        assert wrapped.model_id == "pretraining"
    finally:
        backend.model.eval()


@pytest.mark.slow
def test_generation_stops_at_the_end_of_the_context(backends):
    backend = backends["gpt2"]  # learned positions: n_positions, and not one more
    context = backend.model.config.n_positions
    unit = "Alice has 5 apples. "
    length = lambda k: len(backend.prompt_ids(_prompt(unit * k)))  # noqa: E731
    repeats = int(context / (length(20) / 20))
    while length(repeats) >= context:
        repeats -= 1
    long_prompt = unit * (2 * repeats)
    assert length(2 * repeats) > context
    with pytest.raises(SelfCorrectError, match=f"context is {context}"):
        backend.generate([_prompt(long_prompt, SamplingParams(max_new_tokens=4))])
    near_end = unit * repeats
    room = context - len(backend.prompt_ids(_prompt(near_end)))
    assert 0 < room < 20
    gen = backend.generate([_prompt(near_end, SamplingParams(max_new_tokens=20))])[0]
    assert gen.finish_reason == "length" and len(gen.token_ids) == room


def test_choose_tokens_follows_the_distribution_and_the_nucleus():
    import torch

    from selfcorrect.backends.decode import choose_tokens

    rows = 1000
    logits = torch.log(torch.tensor([0.1, 0.6, 0.3])).expand(rows, 3)
    uniforms = (torch.arange(rows, dtype=torch.float64) + 0.5) / rows
    ones = torch.ones(rows)
    counts = torch.bincount(choose_tokens(logits, ones, ones, uniforms), minlength=3)
    assert counts.tolist() == [100, 600, 300]  # inverse CDF over evenly spread uniforms
    nucleus = torch.bincount(choose_tokens(logits, ones, torch.full((rows,), 0.8), uniforms), minlength=3)
    assert nucleus.tolist() == [0, 667, 333]  # 0.1 is outside the top-0.8 nucleus {0.6, 0.3}
    greedy = choose_tokens(logits, torch.zeros(rows), ones, uniforms)
    assert set(greedy.tolist()) == {1}


def test_missing_tokenizer_names_the_folder(tiny_root, tmp_path):
    from selfcorrect.backends.hf import HFBackend
    from selfcorrect.testing.tiny_hf import tiny_model_dir

    folder = tmp_path / "weights-only"
    folder.mkdir()
    for name in ("config.json", "model.safetensors"):
        shutil.copy(tiny_model_dir("gpt2", tiny_root) / name, folder / name)
    with pytest.raises(SelfCorrectError, match=f"{folder}.*no tokenizer files"):
        HFBackend(str(folder))


@pytest.mark.parametrize("name", ["/no/such/model/folder", "./missing-model", "not a hub id!"])
def test_missing_folder_is_a_user_error(name):
    from selfcorrect.backends.hf import HFBackend

    with pytest.raises(SelfCorrectError, match="does not exist"):
        HFBackend(name)
