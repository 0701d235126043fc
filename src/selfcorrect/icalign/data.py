"""The synthetic in-context alignment task of arXiv 2405.18634 (section 2 of docs/icalign.md).

One sequence holds N triplets (x, y_i, r_i) that all share ONE query x ~ N(0, I_d):

    W* ~ N(0, 1)^{d×d}       the aligned map;   y* = x W*
    W_ε ~ N(0, 1)^{d×d}      a bad map;         y_bad = x W_ε
    r_i ~ U(0, 1)            the reward, i.e. the quality of response i
    y_i = r_i · y* + (1 − r_i) · y_bad

so a response is exactly as good as its reward says. The model never sees y*; it sees the triplets and must output a
response for x that the rewards would rank first. Tokens are d-dimensional vectors, three per triplet:

    x, y_1, [r̃_1, 0, …, 0], x, y_2, [r̃_2, 0, …, 0], …        (length 3N)

Reward noise (a critic that is sometimes wrong): with probability p each SHOWN reward r̃_i is replaced by a fresh
U(0, 1) draw, while y_i is still built from the clean r_i. The loss ranks by the shown rewards too, because a learner
(transformer or GD) only ever has what the critic told it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch


@dataclass
class Batch:
    """One batch of sequences; B = batch size, N = triplets per sequence, d = dimension."""

    x: torch.Tensor  # (B, d) the query shared by every triplet of a sequence
    w_star: torch.Tensor  # (B, d, d)
    w_eps: torch.Tensor  # (B, d, d)
    rewards: torch.Tensor  # (B, N) clean rewards: what the responses are built from
    shown: torch.Tensor  # (B, N) rewards written into the context (= rewards unless noised)
    responses: torch.Tensor  # (B, N, d)

    @property
    def target(self) -> torch.Tensor:
        """y* = x W*, the response the evaluation compares against (never used in training)."""
        return (self.x.unsqueeze(1) @ self.w_star).squeeze(1)

    def tokens(self) -> torch.Tensor:
        """The (B, 3N, d) token stream x, y_i, [r̃_i, 0, …] that the transformer reads."""
        import torch

        b, n, d = self.responses.shape
        reward_tokens = torch.zeros_like(self.responses)
        reward_tokens[..., 0] = self.shown
        xs = self.x.unsqueeze(1).expand(b, n, d)
        return torch.stack((xs, self.responses, reward_tokens), dim=2).reshape(b, 3 * n, d)

    def with_noise(self, p: float, generator: torch.Generator) -> Batch:
        """A copy whose shown rewards are each replaced by a fresh U(0, 1) draw with probability p."""
        import torch

        if not 0.0 <= p <= 1.0:
            raise ValueError(f"reward noise must be in [0, 1], got {p}")
        replace = torch.rand(self.rewards.shape, generator=generator) < p
        fresh = torch.rand(self.rewards.shape, generator=generator)
        return Batch(self.x, self.w_star, self.w_eps, self.rewards, torch.where(replace, fresh, self.rewards),
                     self.responses)


def sample_batch(batch_size: int, n_points: int, dim: int, generator: torch.Generator) -> Batch:
    """Draw `batch_size` clean sequences of `n_points` triplets from `generator` (the only source of randomness, so a
    seeded generator gives the same batch on every machine)."""
    import torch

    x = torch.randn(batch_size, dim, generator=generator)
    w_star = torch.randn(batch_size, dim, dim, generator=generator)
    w_eps = torch.randn(batch_size, dim, dim, generator=generator)
    rewards = torch.rand(batch_size, n_points, generator=generator)
    good = (x.unsqueeze(1) @ w_star)  # (B, 1, d)
    bad = (x.unsqueeze(1) @ w_eps)
    r = rewards.unsqueeze(-1)
    responses = r * good + (1 - r) * bad
    return Batch(x, w_star, w_eps, rewards, rewards.clone(), responses)
