"""The GD reference: for every sequence and every n, a bias-free linear map ŷ = x W fitted to the first n triplets by
the SAME ranking loss the transformer is trained with.

The theory says a transformer's forward pass can emulate gradient steps on this loss, so the curve "1 − cos of the
fitted map vs n" is what the transformer is compared against. All B × N problems are fitted at once as one (B, N, d, d)
parameter: the summed loss has no cross terms between problems, and both optimisers update element-wise (SGD
trivially, Adam by construction), so the batched fit equals B × N separate fits.

The reference fitted it with Adam (lr 0.1, 50 steps) from nn.Linear's random start; that is the default here. Plain
gradient descent (`optimizer="sgd"`) is the literal object of the theory. The reference's noise study also cut the
GD steps to 50 − 25p, tuning the baseline with knowledge of the noise rate the transformer does not have; here the
step count is fixed for all noise rates.
"""

from __future__ import annotations

import math
from typing import Literal

import torch

from selfcorrect.icalign.data import Batch
from selfcorrect.icalign.losses import Loss, Reward, alignment_loss

Optimizer = Literal["adam", "sgd"]


def gd_predictions(batch: Batch, generator: torch.Generator, steps: int = 50, lr: float = 0.1,
                   optimizer: Optimizer = "adam", loss: Loss = "pl", reward: Reward = "cosine") -> torch.Tensor:
    """Predictions (B, N, d): entry i is x W_i with W_i fitted on triplets 0 … i−1 (the transformer's view at i)."""
    b, n, d = batch.responses.shape
    bound = 1 / math.sqrt(d)  # nn.Linear's default init range, the reference's starting point
    w = (torch.rand(b, n, d, d, generator=generator) * 2 - 1) * bound
    w.requires_grad_(True)
    opt = torch.optim.Adam([w], lr=lr) if optimizer == "adam" else torch.optim.SGD([w], lr=lr)
    x = batch.x[:, None, None, :]  # (B, 1, 1, d) broadcast over the N fits

    def predict() -> torch.Tensor:
        return (x @ w).squeeze(-2)

    with torch.enable_grad():
        for _ in range(steps):
            opt.zero_grad()
            alignment_loss(predict(), batch.responses, batch.shown, loss, reward).sum().backward()
            opt.step()
    return predict().detach()
