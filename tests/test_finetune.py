"""The fine-tuning function: it learns what the mask says and nothing else, honours exact step counts, merges LoRA
into a plain folder, pushes down unlikelihood spans, is reproducible, and runs as two gloo processes."""

from __future__ import annotations

import json
import os
import random
from pathlib import Path

import pytest

from selfcorrect.config import build_config
from selfcorrect.errors import SelfCorrectError
from selfcorrect.training.finetune import (
    FinetuneConfig,
    build_trainer,
    finetune,
    load_model,
    tokenize_dataset,
)
from selfcorrect.training.loss import masked_loss
from selfcorrect.training.masks import IGNORE
from test_loss import reference_loss

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parents[1]
FAST = {"learning_rate": 1e-2, "batch_size": 4, "lr_scheduler": "constant"}


def _digits(rng: random.Random, n: int) -> str:
    return "".join(rng.choice("0123456789") for _ in range(n))


def sandbox_conversations(n: int, seed: int = 0) -> list[list[dict]]:
    """Question q, a random wrong first answer, and the correction q+q (a rule the model can pick up quickly)."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        q = _digits(rng, 4)
        out.append([{"role": "user", "content": q}, {"role": "assistant", "content": _digits(rng, 8)},
                    {"role": "user", "content": "review"}, {"role": "assistant", "content": q + q}])
    return out


def _batch(tokenizer, records):
    from selfcorrect.training.finetune import _Collator

    return _Collator(tokenizer.pad_token_id)(records)


def _trained_loss(model_dir, conversations, loss_on="last_assistant") -> float:
    """Mean NLL of the masked tokens under the model saved in `model_dir` (eval mode)."""
    import torch

    model, tokenizer = load_model(model_dir)
    batch = _batch(tokenizer, tokenize_dataset(tokenizer, conversations, loss_on, keep_neg_mask=True))
    inputs = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
    with torch.no_grad():
        return masked_loss(model.eval(), inputs, batch["labels"], None, 0.0)[0].item()


@pytest.mark.slow
def test_full_finetune_lowers_the_trained_loss_and_honours_max_steps(sandbox_dir, tmp_path):
    data = sandbox_conversations(16)
    out = tmp_path / "tuned"
    out.mkdir()
    (out / "stale.txt").write_text("from an older run")
    # one epoch would be 4 steps: max_steps must win, exactly
    result = finetune(sandbox_dir, data, out, FinetuneConfig(max_steps=30, **FAST), quiet=True)

    assert result.steps == 30 and len(result.train_loss_curve) == 30
    assert result.out_dir == out and result.seconds > 0
    assert _trained_loss(out, data) < 0.8 * _trained_loss(sandbox_dir, data)
    assert sum(result.train_loss_curve[-5:]) < sum(result.train_loss_curve[:5])
    assert not (out / "stale.txt").exists()  # replaced as a whole
    assert {p.name for p in tmp_path.iterdir()} == {"tuned"}  # no staging or old folder left behind
    assert {"config.json", "model.safetensors", "tokenizer.json", "finetune.json"} <= {p.name for p in out.iterdir()}
    assert json.loads((out / "config.json").read_text())["use_cache"] is True  # generation keeps its KV cache


@pytest.mark.slow
def test_same_seed_gives_the_same_run(sandbox_dir, tmp_path):
    config = FinetuneConfig(max_steps=3, seed=7, **FAST)
    first = finetune(sandbox_dir, sandbox_conversations(8), tmp_path / "a", config, quiet=True)
    second = finetune(sandbox_dir, sandbox_conversations(8), tmp_path / "b", config, quiet=True)
    assert first.train_loss_curve == second.train_loss_curve
    assert (tmp_path / "a" / "model.safetensors").read_bytes() == (tmp_path / "b" / "model.safetensors").read_bytes()


@pytest.mark.slow
@pytest.mark.parametrize("unlikelihood_weight", [0.0, 0.5])
def test_no_loss_or_gradient_reaches_the_first_answer_under_last_assistant(sandbox_dir, tmp_path,
                                                                           unlikelihood_weight):
    """Through the trainer's own `compute_loss` (the bounded loss, with or without unlikelihood): the gradient
    reaching the final hidden state at positions that predict first-answer (or prompt) tokens is exactly zero, so
    their targets cannot matter; at positions that predict the correction it is not, and the loss equals the plain
    full-logit one. `all_assistant` shows the probe works."""
    import torch

    model, tokenizer = load_model(sandbox_dir)
    conversations = sandbox_conversations(2)
    config = FinetuneConfig(unlikelihood_weight=unlikelihood_weight)

    def hidden_gradient(loss_on: str):
        records = tokenize_dataset(tokenizer, conversations, loss_on, keep_neg_mask=unlikelihood_weight > 0)
        trainer = build_trainer(model, tokenizer, records, config, tmp_path / "scratch", quiet=True)
        batch = _batch(tokenizer, records)
        captured = {}

        def keep(_module, _inputs, output):
            output.retain_grad()
            captured["hidden"] = output

        hook = trainer.model.transformer.ln_f.register_forward_hook(keep)
        trainer.model.train()
        model.zero_grad()
        loss = trainer.compute_loss(trainer.model, dict(batch))
        loss.backward()
        hook.remove()
        return loss, batch, captured["hidden"].grad.abs().sum(-1)

    loss, batch, grad = hidden_gradient("last_assistant")
    predicts_trained = torch.zeros_like(batch["labels"], dtype=torch.bool)
    predicts_trained[:, :-1] = batch["labels"][:, 1:] != IGNORE
    assert (grad[~predicts_trained] == 0).all()
    assert (grad[predicts_trained] > 0).all()
    with torch.no_grad():
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    correction_only = reference_loss(logits, batch["input_ids"], batch["labels"], torch.zeros_like(batch["labels"]), 0)
    assert loss.item() == pytest.approx(correction_only.item(), rel=1e-5)

    _, all_batch, all_grad = hidden_gradient("all_assistant")
    first_answer = torch.zeros_like(all_batch["labels"], dtype=torch.bool)
    first_answer[:, :-1] = (all_batch["labels"][:, 1:] != IGNORE) & ~predicts_trained[:, :-1]
    assert first_answer.any() and (all_grad[first_answer] > 0).all()


@pytest.mark.slow
def test_unlikelihood_lowers_the_probability_of_the_negative_span(sandbox_dir, tmp_path):
    rng = random.Random(1)
    data = []
    for _ in range(8):
        q = _digits(rng, 4)
        data.append([{"role": "user", "content": q}, {"role": "assistant", "content": [
            {"text": "9999", "train": "neg"}, {"text": "9999", "train": "none"}, {"text": q + q, "train": "pos"}]}])

    def neg_nll(model_dir) -> float:
        """Mean NLL of the neg span tokens: higher means less likely."""
        import torch

        model, tokenizer = load_model(model_dir)
        batch = _batch(tokenizer, tokenize_dataset(tokenizer, data, "spans", keep_neg_mask=True))
        with torch.no_grad():
            log_probs = torch.log_softmax(model.eval()(input_ids=batch["input_ids"]).logits[:, :-1], -1)
        picked = log_probs.gather(-1, batch["input_ids"][:, 1:, None])[..., 0]
        return -picked[batch["neg_mask"][:, 1:].bool()].mean().item()

    plain = finetune(sandbox_dir, data, tmp_path / "plain", FinetuneConfig(max_steps=20, **FAST), "spans", quiet=True)
    pushed = finetune(sandbox_dir, data, tmp_path / "pushed",
                      FinetuneConfig(max_steps=20, unlikelihood_weight=1.0, **FAST), "spans", quiet=True)
    assert plain.steps == pushed.steps == 20
    # measured: about 2.6 before, 2.6 after plain training, 5.0 with unlikelihood
    assert neg_nll(tmp_path / "pushed") > neg_nll(sandbox_dir) + 1.0
    assert neg_nll(tmp_path / "pushed") > neg_nll(tmp_path / "plain") + 1.0


@pytest.mark.slow
def test_lora_on_llama_merges_into_a_plain_folder(tmp_path):
    import torch
    from transformers import AutoModelForCausalLM

    from selfcorrect.testing.tiny_hf import tiny_model_dir

    base_dir = tiny_model_dir("llama", tmp_path / "tiny")
    data = [[{"role": "user", "content": "What is 2 + 3?"}, {"role": "assistant", "content": "The answer is 6."},
             {"role": "user", "content": "Check your answer."},
             {"role": "assistant", "content": "5 is correct, final answer 5."}]] * 8
    config = FinetuneConfig(method="lora", lora_r=4, max_steps=4, **FAST)
    result = finetune(base_dir, data, tmp_path / "lora", config, quiet=True)

    assert result.steps == 4 and result.train_loss_curve[-1] < result.train_loss_curve[0]
    files = {p.name for p in (tmp_path / "lora").iterdir()}
    assert "adapter_config.json" not in files and "model.safetensors" in files
    tuned = AutoModelForCausalLM.from_pretrained(tmp_path / "lora")
    base = AutoModelForCausalLM.from_pretrained(base_dir)
    assert type(tuned).__name__ == "LlamaForCausalLM" and not hasattr(tuned, "peft_config")
    assert not any("lora" in name for name in tuned.state_dict())
    ids = torch.tensor([[5, 6, 7, 8, 9, 10]])
    with torch.no_grad():
        assert (tuned(ids).logits - base(ids).logits).abs().max() > 1e-3

    from selfcorrect.backends.base import GenerationRequest, SamplingParams
    from selfcorrect.backends.hf import HFBackend

    request = GenerationRequest(params=SamplingParams(max_new_tokens=4), messages=data[0][:1])
    [generation] = HFBackend(str(tmp_path / "lora")).generate([request])  # the `hf` backend takes the folder as is
    assert generation.token_ids


def test_config_is_strict_and_nothing_trainable_is_an_error(tmp_path):
    from selfcorrect.sandbox.tokenizer import build_tokenizer

    with pytest.raises(SelfCorrectError, match="unknown config key 'lr'"):
        build_config(FinetuneConfig, {"lr": 1e-3})
    with pytest.raises(SelfCorrectError, match="lr_scheduler"):
        build_config(FinetuneConfig, {"lr_scheduler": "cosine_restarts"})
    with pytest.raises(SelfCorrectError, match="model folder not found"):
        finetune(tmp_path / "missing", sandbox_conversations(1), tmp_path / "out")
    tokenizer = build_tokenizer()
    long = sandbox_conversations(2)
    # `<bos>Q` + question + `A` + first answer + `<eos>` fill 16 tokens: a 12-token window holds no correction
    assert len(tokenize_dataset(tokenizer, long, "last_assistant", max_length=20)) == 2
    with pytest.raises(SelfCorrectError, match="no conversation has a trainable token"):
        tokenize_dataset(tokenizer, long, "last_assistant", max_length=12)
    replayed = tokenize_dataset(tokenizer, long[:1], "last_assistant", replay=long[1:])
    assert sum(label != IGNORE for label in replayed[1]["labels"]) == 18  # replay: both turns, 8 digits + <eos> each


@pytest.mark.slow
def test_lora_targets_missing_from_the_model_are_a_clear_error(sandbox_dir, tmp_path):
    config = FinetuneConfig(method="lora", lora_target_modules=["q_proj"], max_steps=1)
    with pytest.raises(SelfCorrectError, match=r"LoRA on model type 'gpt2'.*lora_target_modules"):
        finetune(sandbox_dir, sandbox_conversations(2), tmp_path / "out", config, quiet=True)
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_two_gloo_processes_train_one_step_and_save_a_loadable_model(sandbox_dir, tmp_path):
    import torch
    from transformers import AutoModelForCausalLM

    from selfcorrect.training.launch import finetune_distributed

    result = finetune_distributed(sandbox_dir, sandbox_conversations(4), tmp_path / "ddp",
                                  FinetuneConfig(max_steps=1, batch_size=2), num_processes=2,
                                  accelerate_config=ROOT / "configs" / "accelerate" / "ddp_cpu.yaml", quiet=True)
    assert result.steps == 1 and len(result.train_loss_curve) == 1
    assert json.loads((result.out_dir / "finetune.json").read_text())["processes"] == 2
    tuned = AutoModelForCausalLM.from_pretrained(result.out_dir)
    base = AutoModelForCausalLM.from_pretrained(sandbox_dir)
    changed = [not torch.equal(a, b) for a, b in zip(tuned.parameters(), base.parameters(), strict=True)]
    assert any(changed)


def test_a_rank_killed_by_a_signal_is_reported_by_its_root_cause():
    from selfcorrect.training.launch import _failure

    torchrun = """terminate called without an active exception
torch.distributed.elastic.multiprocessing.errors.ChildFailedError:
Failures:
[1]:
  rank      : 0 (local_rank: 0)
  exitcode  : -15 (pid: 11)  (SIGTERM)
Root Cause (first observed failure):
[0]:
  rank      : 1 (local_rank: 1)
  exitcode  : -6 (pid: 12)  (SIGABRT)
"""
    assert _failure("", torchrun) == ("rank : 1 (local_rank: 1); exitcode : -6 (pid: 12) (SIGABRT); "
                                      "terminate called without an active exception")
    assert _failure("", "error: model folder x has no tokenizer files\n" + torchrun) == \
        "model folder x has no tokenizer files"
