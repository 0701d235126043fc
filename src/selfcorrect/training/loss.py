"""The fine-tuning loss, computed only where it is carried, in chunks sized by a memory budget.

Every method trains on few of a sequence's tokens (a correction after a long prompt, a marked span), but the plain
causal-LM loss makes float32 logits over the whole vocabulary for every position and then a log-softmax copy: on
SmolLM2 (49,152 tokens) a batch of 8 × 400 tokens is 630 MB per copy, several copies through the backward pass.
TRL 1.16's fused LM head avoids the full tensor only on GPUs with Triton; on the CPU it scores every position in
tiles of up to 4,096 × 32,768 logits, and one SmolLM2 step with it rose more in RSS than one with the plain
full-logit loss (benchmarks/results/finetune_memory.json).

So the model runs once with `output_hidden_states=True` and `logits_to_keep=1` (its own head then only sees the
last position), the final hidden states are gathered at the positions that predict a trained (`labels`) or
unlearnt (`neg_mask`) token, and the LM head is applied to them `rows` at a time, each chunk under activation
checkpointing, so at most one chunk's logits exist at once, in the forward pass and in the backward pass alike
(besides the batch × vocabulary logits of the last position).
The head the model applied to the last position is recomputed here and must match, so a model whose logits are not
`lm_head(last hidden state)` (plus Gemma 2's soft-capping, handled) is one clear error, never a wrong loss.
"""

from __future__ import annotations

from typing import Any

from selfcorrect.errors import SelfCorrectError
from selfcorrect.training.masks import IGNORE

#: float32 vocabulary-wide rows alive at once while a chunk's loss and its gradient are computed
_COPIES = 4


def _core(model: Any) -> Any:
    """The model under a DistributedDataParallel wrapper (PEFT models forward attribute lookups themselves)."""
    return getattr(model, "module", model)


def _logits(head: Any, hidden: Any, softcap: float | None) -> Any:
    import torch

    if hasattr(head.weight, "full_tensor"):  # FSDP2 keeps parameters sharded as DTensors (as TRL's fused head does)
        bias = head.bias.full_tensor() if head.bias is not None else None
        logits = torch.nn.functional.linear(hidden, head.weight.full_tensor(), bias).float()
    else:
        logits = head(hidden).float()
    return softcap * torch.tanh(logits / softcap) if softcap else logits


def chunk_rows(vocab_size: int, budget_mb: float) -> int:
    """How many positions' logits fit the budget, counting the copies the backward pass makes."""
    return max(1, int(budget_mb * 2**20) // (vocab_size * 4 * _COPIES))


def target_log_probs(head: Any, hidden: Any, targets: Any, rows: int, softcap: float | None = None) -> Any:
    """log p(target) for each row of `hidden` (n, H), the head applied `rows` rows at a time under checkpointing."""
    import torch
    from torch.utils.checkpoint import checkpoint

    def chunk(states: Any, wanted: Any) -> Any:
        logits = _logits(head, states, softcap)
        return logits.gather(-1, wanted.unsqueeze(-1)).squeeze(-1) - torch.logsumexp(logits, dim=-1)

    parts = [checkpoint(chunk, hidden[i:i + rows], targets[i:i + rows], use_reentrant=False)
             for i in range(0, hidden.shape[0], rows)]
    return torch.cat(parts) if parts else hidden.new_zeros(0)


def _check_head(model: Any, outputs: Any, head: Any, softcap: float | None) -> None:
    import torch

    with torch.no_grad():
        ours = _logits(head, outputs.hidden_states[-1][:, -1], softcap)
        theirs = outputs.logits[:, -1].float()
        scale = theirs.abs().max().clamp(min=1.0)
        if not torch.allclose(ours, theirs, rtol=1e-3, atol=1e-3 * float(scale)):
            model_type = getattr(getattr(model, "config", None), "model_type", type(model).__name__)
            raise SelfCorrectError(f"model type {model_type!r} does not compute its logits as its output embedding "
                                   "applied to its last hidden state, so the memory-bounded loss cannot be used")


def masked_loss(model: Any, inputs: dict[str, Any], labels: Any, neg_mask: Any | None, unlikelihood_weight: float,
                num_items_in_batch: Any = None, budget_mb: float = 256.0) -> tuple[Any, Any]:
    """Next-token NLL on `labels`, plus `unlikelihood_weight` × −log(1 − p(token)) on `neg_mask` tokens; returns
    the loss and the model's outputs.

    Both sums are divided by the number of trained (label) tokens, `num_items_in_batch` when the Trainer counted
    them over the whole accumulation window, so the result is the causal-LM loss when there is no neg token.
    """
    import torch

    outputs = model(**inputs, use_cache=False, output_hidden_states=True, logits_to_keep=1)
    core = _core(model)
    head = core.get_output_embeddings()
    softcap = getattr(core.config.get_text_config(), "final_logit_softcapping", None)
    _check_head(core, outputs, head, softcap)

    hidden = outputs.hidden_states[-1][:, :-1]
    targets, next_ids = labels[:, 1:], inputs["input_ids"][:, 1:]
    trained = targets != IGNORE
    neg = neg_mask[:, 1:].bool() & ~trained if neg_mask is not None else torch.zeros_like(trained)
    carried = trained | neg
    log_probs = target_log_probs(head, hidden[carried], torch.where(trained, targets, next_ids)[carried],
                                 chunk_rows(head.weight.shape[0], budget_mb), softcap)
    is_neg = neg[carried]
    total = -log_probs[~is_neg].sum()
    if is_neg.any():
        # log(1 − p) = log(−expm1(log p)), clamped so a token the model is sure of gives a large but finite penalty
        total = total - unlikelihood_weight * torch.log((-torch.expm1(log_probs[is_neg])).clamp(min=1e-6)).sum()
    if not carried.any():
        total = total + 0.0 * hidden.sum()  # a differentiable zero: every rank must still run backward
    count = num_items_in_batch if num_items_in_batch is not None else trained.sum()
    return total / torch.as_tensor(count, device=total.device).clamp(min=1), outputs
