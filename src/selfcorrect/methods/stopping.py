"""Stop rules for multi-round self-correction: after each answer round, which trajectories stop asking themselves?

- `fixed`: never early; every trajectory runs all T rounds (the protocol of the papers).
- `converged`: stop once the answer has not changed for `patience` rounds (extracted answers compared after
  normalisation), or, when `nll_epsilon` is set, once the answer's mean NLL moved by less than ε for `patience`
  rounds. Needs nothing but the model's own outputs, so it is a legitimate inference-time rule.
- `oracle`: stop as soon as the answer is correct. It reads the gold answer, so it is not self-correction at all:
  it is the upper bound of what any stop rule could make of these answers, and Huang et al. (2024) show that
  results which stop on gold labels overstate intrinsic self-correction. Every summary of an oracle run says so.

Each trajectory records where it stopped: `stopped`, `stop_reason` and `metadata["stop_round"]` (the last round it
answered); trajectories that ran to the end get the reason "max_rounds".
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import pairwise
from typing import Any

from selfcorrect.analysis.round_uncertainty import answer_key
from selfcorrect.analysis.uncertainty import casefold_answer
from selfcorrect.trajectory import Trajectory, Turn

STOP_RULES = ("fixed", "converged", "oracle")
ORACLE_LABEL = "oracle: stops on the gold answer, an upper bound, not self-correction"


def _comparable(turn: Turn) -> str:
    """What "the same answer" means: the turn's answer (`answer_key`), case and whitespace aside."""
    return casefold_answer(answer_key(turn))


@dataclass(frozen=True)
class StopRule:
    name: str = "fixed"
    patience: int = 1
    nll_epsilon: float | None = None

    def __post_init__(self) -> None:
        if self.name not in STOP_RULES:
            raise ValueError(f"unknown stop rule {self.name!r}; known: {', '.join(STOP_RULES)}")
        if self.patience < 1:
            raise ValueError(f"stop patience must be >= 1, got {self.patience}")

    @property
    def oracle(self) -> bool:
        return self.name == "oracle"

    def reason(self, trajectory: Trajectory) -> str | None:
        """Why this trajectory should stop after its latest answer, or None to go on."""
        turns = trajectory.model_turns()
        if not turns:
            return None
        if self.name == "oracle":
            verdict = turns[-1].verdict
            return "oracle: correct" if verdict is not None and verdict.correct else None
        if self.name == "fixed" or len(turns) <= self.patience:
            return None
        recent = turns[-(self.patience + 1):]
        if len({_comparable(t) for t in recent}) == 1:
            return f"converged: answer unchanged for {self.patience} round(s)"
        nlls = [t.logprobs.mean_nll for t in recent if t.logprobs is not None]
        steady = self.nll_epsilon is not None and len(nlls) == len(recent)
        if steady and all(abs(b - a) < self.nll_epsilon for a, b in pairwise(nlls)):
            return f"converged: mean NLL moved by < {self.nll_epsilon} for {self.patience} round(s)"
        return None

    def apply(self, trajectories: Sequence[Trajectory], round_index: int) -> int:
        """Stop every unfinished trajectory whose rule fires after round `round_index`; returns how many stopped."""
        stopped = 0
        for traj in trajectories:
            if traj.stopped:
                continue
            why = self.reason(traj)
            if why is not None:
                mark_stopped(traj, why, round_index)
                stopped += 1
        return stopped


def mark_stopped(trajectory: Trajectory, reason: str, round_index: int) -> None:
    trajectory.stopped = True
    trajectory.stop_reason = reason
    trajectory.metadata["stop_round"] = round_index


def finish(trajectories: Sequence[Trajectory], last_round: int) -> None:
    """Close the trajectories that ran every round, so each one records where it stopped."""
    for traj in trajectories:
        if not traj.stopped:
            mark_stopped(traj, "max_rounds", last_round)


def stop_summary(trajectories: Sequence[Trajectory], rule: StopRule) -> dict[str, Any]:
    """The distribution of stop rounds (summary.json's `stopping` block)."""
    rounds = [t.metadata["stop_round"] for t in trajectories if "stop_round" in t.metadata]
    histogram = Counter(rounds)
    reasons = Counter((t.stop_reason or "").split(":")[0] for t in trajectories if t.stop_reason)
    block: dict[str, Any] = {"rule": rule.name, "patience": rule.patience, "nll_epsilon": rule.nll_epsilon,
                             "stop_round_histogram": {str(r): histogram[r] for r in sorted(histogram)},
                             "mean_stop_round": sum(rounds) / len(rounds) if rounds else None,
                             "reasons": dict(sorted(reasons.items()))}
    if rule.oracle:
        block["label"] = ORACLE_LABEL
    return block


def answer_change_rate(trajectories: Sequence[Trajectory]) -> list[dict[str, Any]]:
    """Per round t >= 2, the share of trajectories that answered at t and changed their answer from t - 1."""
    changed: Counter[int] = Counter()
    answered: Counter[int] = Counter()
    for traj in trajectories:
        keys = [_comparable(t) for t in traj.model_turns()]
        for t in range(1, len(keys)):
            answered[t + 1] += 1
            changed[t + 1] += keys[t] != keys[t - 1]
    return [{"round": t, "changed": changed[t] / answered[t], "n": answered[t]} for t in sorted(answered)]


def convergence_round(trajectories: Sequence[Trajectory], seed: int = 0, n_boot: int = 1000) -> dict[str, Any]:
    """The run's convergence round: the first round t whose accuracy no later round differs from, i.e. the paired
    95% bootstrap interval of acc@s − acc@t holds 0 for every s > t (example-weighted, as in metrics). None when
    only the last round qualifies (trivially): accuracy was still moving when the run ended."""
    import numpy as np

    from selfcorrect.analysis.metrics import bootstrap_ci, correct_at, n_rounds, per_example

    rounds = n_rounds(trajectories)
    correct = [per_example(trajectories, lambda traj, t=t: correct_at(traj, t))[1] for t in range(1, rounds + 1)]
    found = rounds
    for t in range(1, rounds + 1):
        if all(_holds_zero(bootstrap_ci(correct[s] - correct[t - 1], np.mean, n_boot, seed))
               for s in range(t, rounds)):
            found = t
            break
    return {"round": found if found < rounds or rounds <= 1 else None, "rounds": rounds,
            "rule": "first round t with 0 inside the paired 95% bootstrap interval of acc@s - acc@t for all s > t",
            "answer_change_rate": answer_change_rate(trajectories)}


def _holds_zero(interval: tuple[float, float]) -> bool:
    return interval[0] <= 0.0 <= interval[1]
