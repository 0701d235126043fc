"""Ranking losses on in-context responses: Plackett–Luce and Bradley–Terry, with an implicit reward r_θ(ŷ, y).

The learner's prediction ŷ scores each in-context response y_j by r_θ(ŷ, y_j) (the cosine similarity, as in the
reference code, or the negative mean squared error). The loss is the negative log-likelihood of the ranking that the
SHOWN rewards impose on the responses:

    PL:  −log P(τ) = −Σ_k [ s_τ(k) − log Σ_{k' ≥ k} exp s_τ(k') ]      (τ sorts the responses by reward, best first)
    BT:  mean over pairs (j, k) with r_j > r_k of −log σ(s_j − s_k)

Every prediction position i sees only the responses before it (j < i), so one (B, P, N) score tensor and a prefix
mask give the loss of all positions at once. A list of fewer than two responses has no ranking to learn from (its
PL likelihood is 1, it has no BT pair), so positions with fewer than MIN_EXAMPLES examples are left out of the mean.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    import torch

Loss = Literal["pl", "bt"]
Reward = Literal["cosine", "neg_mse"]
MIN_EXAMPLES = 2
# Masked scores are set to this instead of -inf: exp() of it is exactly 0, and unlike -inf it never produces
# inf - inf = nan in the forward pass or the gradients of rows that are masked out entirely.
_MASKED = -1e9


def implicit_reward(pred: torch.Tensor, responses: torch.Tensor, reward: Reward) -> torch.Tensor:
    """Scores s[b, i, j] = r_θ(pred[b, i], responses[b, j]) for predictions (B, P, d) and responses (B, N, d)."""
    import torch.nn.functional as F

    if reward == "cosine":
        return F.cosine_similarity(pred.unsqueeze(2), responses.unsqueeze(1), dim=-1)
    if reward == "neg_mse":
        return -(pred.unsqueeze(2) - responses.unsqueeze(1)).square().mean(-1)
    raise ValueError(f"unknown reward {reward!r}")


def prefix_mask(n_pred: int, n_points: int, device: torch.device | None = None) -> torch.Tensor:
    """valid[i, j] = (j < i): prediction i is made after seeing triplets 0 … i−1."""
    import torch

    return torch.arange(n_points, device=device).unsqueeze(0) < torch.arange(n_pred, device=device).unsqueeze(1)


def pl_nll(scores: torch.Tensor, rewards: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Plackett–Luce NLL (B, P) of the reward ranking of the valid responses; scores (B, P, N), rewards (B, N),
    valid (P, N) or (B, P, N)."""
    import torch

    order = rewards.argsort(dim=-1, descending=True).unsqueeze(1).expand_as(scores)
    s = scores.gather(-1, order)
    keep = valid.expand_as(scores).gather(-1, order)
    s = torch.where(keep, s, torch.full_like(s, _MASKED))
    tail = torch.logcumsumexp(s.flip(-1), dim=-1).flip(-1)  # log Σ_{k' ≥ k} exp s_k'
    return -torch.where(keep, s - tail, torch.zeros_like(s)).sum(-1)


def bt_nll(scores: torch.Tensor, rewards: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Bradley–Terry NLL (B, P): the mean over valid pairs (better, worse) of −log σ(s_better − s_worse)."""
    import torch.nn.functional as F

    keep = valid.expand_as(scores)
    pairs = (rewards.unsqueeze(-1) > rewards.unsqueeze(-2)).unsqueeze(1) & keep.unsqueeze(-1) & keep.unsqueeze(-2)
    nll = F.softplus(scores.unsqueeze(-2) - scores.unsqueeze(-1))  # [j, k] = −log σ(s_j − s_k)
    return (nll * pairs).sum((-1, -2)) / pairs.sum((-1, -2)).clamp(min=1)


def alignment_loss(pred: torch.Tensor, responses: torch.Tensor, rewards: torch.Tensor, loss: Loss = "pl",
                   reward: Reward = "cosine") -> torch.Tensor:
    """Per-position loss (B, P) of predictions (B, P, d) against the responses that precede each position."""
    scores = implicit_reward(pred, responses, reward)
    valid = prefix_mask(pred.shape[1], responses.shape[1], device=pred.device)
    if loss == "pl":
        return pl_nll(scores, rewards, valid)
    if loss == "bt":
        return bt_nll(scores, rewards, valid)
    raise ValueError(f"unknown loss {loss!r}")


def training_loss(per_position: torch.Tensor) -> torch.Tensor:
    """Mean over the positions with at least MIN_EXAMPLES examples and over the batch (the reference's average)."""
    return per_position[:, MIN_EXAMPLES:].mean()
