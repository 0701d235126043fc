"""Configs of the in-context alignment lab and its two named presets.

`paper` is the reference code's recipe (arXiv 2405.18634, `yifeiwang77/Self-Correction`): 20 layers, 3 heads, width
96, Adam 1e-4, batch 256, 3000 steps, and its sweeps (depth 5/10/15/20; heads 1/3/4/6 at 32 dimensions a head). It
needs a GPU: about 3 s a step on the 2-core CPU (docs/icalign.md).

`cpu` keeps every comparison of the paper (TF vs GD, reward noise, depth, softmax vs linear attention, heads, MLP
on/off, 3 seeds) at sizes whose whole sweep fits in 45 minutes on a 2-core CPU: 3 layers of width 32, 16 triplets
(the paper reads its curves up to 15 examples, so nothing it reports is lost), batch 32 and lr 1e-3 (with batch 64
or lr ≥ 2e-3 the small models stayed on the loss plateau for the whole budget in our trials), 4000 steps, and a
heads sweep at a FIXED width (the paper's heads sweep widens the model with the head count, so it cannot tell heads
from width).

This module holds no torch import: the CLI builds and validates configs before it loads torch.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator

from selfcorrect.config import StrictModel, build_config, merge
from selfcorrect.errors import SelfCorrectError, suggest


class ModelSettings(StrictModel):
    n_layer: int = Field(ge=1)
    n_head: int = Field(ge=1)
    n_embd: int = Field(ge=1)
    softmax: bool = True  # False: linear attention (still causal)
    mlp: bool = True

    @model_validator(mode="after")
    def _heads_divide_width(self) -> ModelSettings:
        if self.n_embd % self.n_head:
            raise ValueError(f"n_embd={self.n_embd} is not a multiple of n_head={self.n_head}")
        return self


class TaskSettings(StrictModel):
    dim: int = Field(5, ge=1)
    n_points: int = Field(20, ge=3)  # triplets per sequence
    loss: Literal["pl", "bt"] = "pl"
    reward: Literal["cosine", "neg_mse"] = "cosine"


class TrainSettings(StrictModel):
    steps: int = Field(ge=1)
    batch_size: int = Field(ge=1)
    lr: float = Field(gt=0)
    checkpoint_every: int = Field(ge=1)
    seed: int = 0


class EvalSettings(StrictModel):
    batch_size: int = Field(256, ge=2)
    seed: int = 12345  # one fixed eval batch for every run: variants and seeds are compared on the same sequences
    # probability that a shown reward is replaced by a fresh U(0, 1) draw
    noise: list[float] = Field(default_factory=lambda: [0.0, 0.25, 0.5, 0.75, 1.0])
    gd_steps: int = Field(50, ge=0)
    gd_lr: float = Field(0.1, gt=0)  # Adam's (the reference's); plain SGD wants about 1.0
    gd_optimizer: Literal["adam", "sgd"] = "adam"


class RunConfig(StrictModel):
    """Everything one training run and its evaluation depend on; saved as config.yaml in the run folder."""

    preset: str
    model: ModelSettings
    task: TaskSettings = TaskSettings()
    train: TrainSettings
    eval: EvalSettings = EvalSettings()


class SweepSettings(StrictModel):
    seeds: list[int] = Field(default_factory=lambda: [0, 1, 2])
    depths: list[int]
    heads: list[int]
    head_width: int | None = None  # None: heads share the base width; an int: width = heads * head_width (paper)


class SweepConfig(RunConfig):
    """A run config (the base model and its training recipe) plus the axes that the sweep varies around it."""

    sweep: SweepSettings


PRESETS: dict[str, dict[str, Any]] = {
    "paper": {
        "model": {"n_layer": 20, "n_head": 3, "n_embd": 96},
        "train": {"steps": 3000, "batch_size": 256, "lr": 1e-4, "checkpoint_every": 500},
        "sweep": {"depths": [5, 10, 15, 20], "heads": [1, 3, 4, 6], "head_width": 32},
    },
    "cpu": {
        "model": {"n_layer": 3, "n_head": 2, "n_embd": 32},
        "task": {"n_points": 16},
        "train": {"steps": 4000, "batch_size": 32, "lr": 1e-3, "checkpoint_every": 500},
        "sweep": {"depths": [1, 2, 3, 4], "heads": [1, 2, 4]},
    },
}


def preset_dict(name: str) -> dict[str, Any]:
    if name not in PRESETS:
        raise SelfCorrectError(f"unknown preset {name!r}{suggest(name, tuple(PRESETS))}; "
                               f"choose one of {', '.join(PRESETS)}")
    return {"preset": name, **PRESETS[name]}


def run_config(preset: str, seed: int | None = None, overrides: dict[str, Any] | None = None) -> RunConfig:
    """The preset's base run < `--seed` < `--set` overrides (the precedence of every selfcorrect command)."""
    data = {k: v for k, v in preset_dict(preset).items() if k != "sweep"}
    if seed is not None:
        data = merge(data, {"train": {"seed": seed}})
    return build_config(RunConfig, merge(data, overrides or {}), source=f"preset {preset!r}")


def sweep_config(preset: str, seeds: list[int] | None = None, overrides: dict[str, Any] | None = None) -> SweepConfig:
    data = preset_dict(preset)
    if seeds is not None:
        data = merge(data, {"sweep": {"seeds": seeds}})
    return build_config(SweepConfig, merge(data, overrides or {}), source=f"preset {preset!r}")
