"""The memory-bounded fine-tuning loss: the same loss and gradients as the plain full-logit computation, and the LM
head only ever applied to a budget's worth of positions at once."""

from __future__ import annotations

import pytest

from selfcorrect.errors import SelfCorrectError
from selfcorrect.training.loss import chunk_rows, masked_loss
from selfcorrect.training.masks import IGNORE

ARCHS = ("gpt2", "llama", "qwen2", "phi3")


def _model(arch: str):
    import torch
    from transformers import AutoModelForCausalLM

    from selfcorrect.testing.tiny_hf import _config

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = AutoModelForCausalLM.from_config(_config(arch, 96, {"bos_token_id": 0, "eos_token_id": 1,
                                                                    "pad_token_id": 2}))
    return model.eval()  # no dropout, so two forward passes compare exactly (gradients flow in eval mode too)


def _batch(seed: int = 0):
    """Two right-padded rows: a few trained tokens at the end, a mistake before them in the first row."""
    import torch

    generator = torch.Generator().manual_seed(seed)
    input_ids = torch.randint(3, 96, (2, 24), generator=generator)
    attention_mask = torch.ones_like(input_ids)
    attention_mask[1, 20:] = 0
    input_ids[1, 20:] = 2
    labels = torch.full_like(input_ids, IGNORE)
    labels[0, 17:] = input_ids[0, 17:]
    labels[1, 12:20] = input_ids[1, 12:20]
    neg_mask = torch.zeros_like(input_ids)
    neg_mask[0, 9:15] = 1
    return {"input_ids": input_ids, "attention_mask": attention_mask}, labels, neg_mask


def reference_loss(logits, input_ids, labels, neg_mask, unlikelihood_weight):
    """The plain computation: float32 log-softmax over every position and the whole vocabulary."""
    import torch

    log_probs = torch.log_softmax(logits[:, :-1].float(), dim=-1)
    targets, next_ids, neg = labels[:, 1:], input_ids[:, 1:], neg_mask[:, 1:].bool()
    trained = targets != IGNORE
    nll = -log_probs.gather(-1, targets.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    picked = log_probs.gather(-1, next_ids.unsqueeze(-1)).squeeze(-1)
    unlikelihood = -torch.log((-torch.expm1(picked)).clamp(min=1e-6))
    return (nll[trained].sum() + unlikelihood_weight * unlikelihood[neg].sum()) / trained.sum()


def _gradients(model):
    return {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("unlikelihood_weight", [0.0, 0.5])
def test_loss_and_gradients_equal_the_full_logit_computation(arch, unlikelihood_weight):
    import torch

    model = _model(arch)
    inputs, labels, neg_mask = _batch()
    logits = model(**inputs).logits
    expected = reference_loss(logits, inputs["input_ids"], labels, neg_mask, unlikelihood_weight)
    expected.backward()
    expected_grads = _gradients(model)
    model.zero_grad()

    rows = 5  # of the 21 carried positions: five chunks, the last one short
    loss, _ = masked_loss(model, inputs, labels, neg_mask, unlikelihood_weight, budget_mb=rows * 96 * 16 / 2**20)
    loss.backward()
    grads = _gradients(model)

    assert loss.item() == pytest.approx(expected.item(), abs=1e-6)
    assert grads.keys() == expected_grads.keys()
    for name, grad in grads.items():
        torch.testing.assert_close(grad, expected_grads[name], rtol=0, atol=1e-6, msg=name)


def test_the_lm_head_never_sees_more_positions_than_the_budget_allows():
    """A hook on the LM head records every output it makes: the model's own forward makes (batch, seq, vocab)
    logits; the bounded loss only (batch, 1, vocab) for the last position (and its check of that position,
    (batch, vocab)), then chunks of at most `rows` rows."""
    model = _model("llama")
    inputs, labels, neg_mask = _batch()
    shapes = []
    hook = model.get_output_embeddings().register_forward_hook(lambda _m, _i, out: shapes.append(tuple(out.shape)))
    model(**inputs)
    assert shapes == [(2, 24, 96)]  # the plain path, as the hook sees it

    shapes.clear()
    budget = 5 * 96 * 16 / 2**20
    assert chunk_rows(96, budget) == 5
    loss, _ = masked_loss(model, inputs, labels, neg_mask, 1.0, budget_mb=budget)
    forward_shapes = list(shapes)
    loss.backward()  # checkpointing recomputes each chunk: the same shapes again, never more
    hook.remove()

    assert forward_shapes[:2] == [(2, 1, 96), (2, 96)]
    chunks = forward_shapes[2:]
    assert chunks == [(5, 96)] * 4 + [(1, 96)]  # 7 + 8 trained tokens and 6 mistake tokens: 21 positions
    assert shapes[len(forward_shapes):] == chunks[::-1]  # the backward pass recomputes them, last first
    assert max(s[0] * (s[1] if len(s) == 3 else 1) for s in shapes) <= 5


def test_a_batch_with_nothing_to_learn_is_a_differentiable_zero():
    model = _model("gpt2")
    inputs, labels, _ = _batch()
    loss, _ = masked_loss(model, inputs, labels.fill_(IGNORE), None, 0.0)
    loss.backward()
    assert loss.item() == 0.0
    assert all(p.grad is None or not p.grad.any() for p in model.parameters())


def test_a_model_whose_logits_are_not_its_head_on_the_last_state_is_a_clear_error():
    model = _model("llama")
    model.config.final_logit_softcapping = 0.5  # the loss would soft-cap; this model's forward does not
    inputs, labels, neg_mask = _batch()
    with pytest.raises(SelfCorrectError, match="model type 'llama' does not compute its logits"):
        masked_loss(model, inputs, labels, neg_mask, 0.0)
