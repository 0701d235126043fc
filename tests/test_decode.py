"""What the decode loop does, not only how fast: it stops at end-of-sequence, at stop strings and at the length
limit with the right finish reason, evicting finished rows and sorting rows by length change no output, and the
memory budget splits a call into chunks without changing a sample."""

from __future__ import annotations

import pytest

from selfcorrect.backends.base import GenerationRequest, SamplingParams

PROMPTS = ["Alice has", "Question: how many birds does Carol have?\nAnswer:", "12 + 7 =", "Then the final result is",
           "A much longer prompt that pads the others, so that rows of different lengths share one batch:"]


@pytest.fixture(scope="module")
def backend(tmp_path_factory):
    from selfcorrect.backends.hf import HFBackend
    from selfcorrect.testing.tiny_hf import tiny_model_dir

    return HFBackend(str(tiny_model_dir("llama", tmp_path_factory.mktemp("tiny"))), dtype="float32")


def _requests(params: SamplingParams) -> list[GenerationRequest]:
    return [GenerationRequest(params, prompt=p) for p in PROMPTS]


def _free_run(backend, params: SamplingParams):
    """Outputs with no end-of-sequence id, so every row runs to its length limit."""
    saved, backend.eos_ids = backend.eos_ids, []
    try:
        return backend.generate(_requests(params))
    finally:
        backend.eos_ids = saved


@pytest.mark.slow
@pytest.mark.parametrize("temperature", [0.0, 1.0])
def test_rows_stop_at_the_first_end_of_sequence_token(backend, temperature):
    params = SamplingParams(temperature=temperature, max_new_tokens=12, seed=3)
    free = _free_run(backend, params)
    eos = free[1].token_ids[4]  # make the token row 1 writes 5th the end-of-sequence token
    saved, backend.eos_ids = backend.eos_ids, [eos]
    try:
        gens = backend.generate(_requests(params))
    finally:
        backend.eos_ids = saved
    for gen, full in zip(gens, free, strict=True):
        if eos in full.token_ids:
            cut = full.token_ids.index(eos) + 1
            assert gen.token_ids == full.token_ids[:cut] and gen.finish_reason == "stop"
            assert len(gen.token_logprobs) == len(gen.token_entropies) == cut
        else:
            assert gen.token_ids == full.token_ids and gen.finish_reason == "length"
    assert len(gens[1].token_ids) <= 5


@pytest.mark.slow
def test_length_limits_are_per_request(backend):
    limits = [1, 7, 3, 12, 5]
    saved, backend.eos_ids = backend.eos_ids, []
    try:
        gens = backend.generate([GenerationRequest(SamplingParams(max_new_tokens=n), prompt=p)
                                 for p, n in zip(PROMPTS, limits, strict=True)])
    finally:
        backend.eos_ids = saved
    assert [len(g.token_ids) for g in gens] == limits
    assert all(g.finish_reason == "length" for g in gens)


@pytest.mark.slow
def test_stop_strings_cut_the_text_and_end_the_row(backend):
    free = _free_run(backend, SamplingParams(max_new_tokens=16))
    text = free[2].text
    stop = text[len(text) // 2:len(text) // 2 + 3]
    assert stop.strip() and stop in text
    saved, backend.eos_ids = backend.eos_ids, []
    try:
        gen = backend.generate([GenerationRequest(SamplingParams(max_new_tokens=16, stop=(stop,)),
                                                  prompt=PROMPTS[2])])[0]
    finally:
        backend.eos_ids = saved
    assert gen.finish_reason == "stop"
    assert gen.text == text[:text.index(stop)]
    assert len(gen.token_ids) < len(free[2].token_ids)  # the row stopped decoding, not only its text was cut
    assert gen.token_ids == free[2].token_ids[:len(gen.token_ids)]


@pytest.mark.slow
@pytest.mark.parametrize("temperature", [0.0, 0.8])
def test_eviction_and_chunking_change_no_output(backend, monkeypatch, temperature):
    from selfcorrect.backends import decode

    params = SamplingParams(temperature=temperature, top_p=0.9, max_new_tokens=10, seed=5)
    requests = [GenerationRequest(SamplingParams(temperature=temperature, max_new_tokens=n, seed=5), prompt=p)
                for p, n in zip(PROMPTS, [2, 10, 4, 10, 6], strict=True)] + _requests(params)
    reference = backend.generate(requests)
    monkeypatch.setattr(decode, "EVICT_SHARE", 10.0)  # never evict
    assert [g.token_ids for g in backend.generate(requests)] == [g.token_ids for g in reference]
    monkeypatch.setattr(backend, "memory_bytes", 1)  # one row per chunk
    alone = backend.generate(requests)
    assert [g.token_ids for g in alone] == [g.token_ids for g in reference]
    for one, ref in zip(alone, reference, strict=True):
        assert one.token_logprobs == pytest.approx(ref.token_logprobs, abs=1e-5)


def test_chunks_follow_length_order_batch_size_and_budget(backend, monkeypatch):
    order = [3, 0, 2, 1]
    monkeypatch.setattr(backend, "batch_size", 3)
    assert backend._chunks(order, lambda chunk: 0) == [[3, 0], [2, 1]]  # batch size 3: two even chunks
    monkeypatch.setattr(backend, "memory_bytes", 100)
    assert backend._chunks(order, lambda chunk: 60 * len(chunk)) == [[3], [0], [2], [1]]
    assert backend._chunks(order, lambda chunk: 10_000) == [[3], [0], [2], [1]]  # too big alone still runs
    monkeypatch.setattr(backend, "batch_size", 100)
    assert backend._chunks(list(range(5)), lambda chunk: 25 * len(chunk)) == [[0, 1, 2], [3, 4]]  # not 4 + 1
