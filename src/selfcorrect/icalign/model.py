"""The lab's transformer: a GPT-2 (pre-LN, learned positions, GELU MLP) over d-dimensional tokens, in one file.

It replaces the reference's Hugging Face GPT-2 plus two hand-written ablation models by ONE model with switches, so
that every variant shares everything except the switched part:

- `softmax=False` gives linear attention, y = (Q Kᵀ / √d_h) V with the same causal mask (entries above the
  diagonal set to 0, not −∞, since nothing normalises them). The reference's ablations had no mask at all, so the
  prediction at position n could read later triplets; here EVERY variant is causal.
- `mlp=False` drops the MLP sub-block; the block stays pre-LN (the reference's no-FFN block also switched to
  post-LN, changing two things at once).
- `n_head`, `n_layer`, `n_embd` as in GPT-2.

Tokens are read in by Linear(d → width), read out by Linear(width → d), and predictions are taken at the x tokens
(every third position), so prediction i has seen triplets 0 … i−1 and the query x.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass
class ModelConfig:
    dim: int = 5
    n_points: int = 20  # triplets per sequence; the context is 3 * n_points tokens
    n_layer: int = 20
    n_head: int = 3
    n_embd: int = 96
    softmax: bool = True
    mlp: bool = True


class CausalSelfAttention(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        if config.n_embd % config.n_head:
            raise ValueError(f"n_embd={config.n_embd} is not a multiple of n_head={config.n_head}")
        self.n_head = config.n_head
        self.softmax = config.softmax
        self.c_attn = nn.Linear(config.n_embd, 3 * config.n_embd)
        self.c_proj = nn.Linear(config.n_embd, config.n_embd)
        length = 3 * config.n_points
        self.register_buffer("causal", torch.ones(length, length, dtype=torch.bool).tril(), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, c = x.shape
        q, k, v = (z.view(b, t, self.n_head, c // self.n_head).transpose(1, 2)
                   for z in self.c_attn(x).split(c, dim=2))
        if self.softmax:
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        else:
            att = (q @ k.transpose(-2, -1)) / math.sqrt(k.shape[-1])
            y = att.masked_fill(~self.causal[:t, :t], 0.0) @ v
        return self.c_proj(y.transpose(1, 2).reshape(b, t, c))


class MLP(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        self.c_fc = nn.Linear(config.n_embd, 4 * config.n_embd)
        self.gelu = nn.GELU(approximate="tanh")  # GPT-2's "gelu_new"
        self.c_proj = nn.Linear(4 * config.n_embd, config.n_embd)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.c_proj(self.gelu(self.c_fc(x)))


class Block(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        self.ln_1 = nn.LayerNorm(config.n_embd)
        self.attn = CausalSelfAttention(config)
        self.ln_2 = nn.LayerNorm(config.n_embd) if config.mlp else None
        self.mlp = MLP(config) if config.mlp else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x))
        if self.mlp is not None:
            x = x + self.mlp(self.ln_2(x))
        return x


class ICATransformer(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        self.read_in = nn.Linear(config.dim, config.n_embd)
        self.wpe = nn.Embedding(3 * config.n_points, config.n_embd)
        self.h = nn.ModuleList(Block(config) for _ in range(config.n_layer))
        self.ln_f = nn.LayerNorm(config.n_embd)
        self.read_out = nn.Linear(config.n_embd, config.dim)
        # GPT-2's initialisation for the backbone: N(0, 0.02), and residual projections scaled by 1/√(2·n_layer) so
        # the residual stream's variance does not grow with depth. read_in/read_out keep torch's default, as in the
        # reference (they sit outside its GPT2Model).
        for name, param in self.h.named_parameters():
            if name.endswith("c_proj.weight"):
                nn.init.normal_(param, std=0.02 / math.sqrt(2 * config.n_layer))
            elif name.endswith(".weight") and param.dim() == 2:
                nn.init.normal_(param, std=0.02)
            elif name.endswith(".bias") and "ln_" not in name:
                nn.init.zeros_(param)
        nn.init.normal_(self.wpe.weight, std=0.02)

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """tokens (B, 3N, d) -> predictions (B, N, d), read at the x tokens."""
        t = tokens.shape[1]
        if t > self.wpe.num_embeddings:
            raise ValueError(f"sequence of {t} tokens is longer than the model's {self.wpe.num_embeddings}")
        h = self.read_in(tokens) + self.wpe(torch.arange(t, device=tokens.device))
        for block in self.h:
            h = block(h)
        return self.read_out(self.ln_f(h))[:, ::3]
