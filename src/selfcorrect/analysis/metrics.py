"""Accuracy by round and the self-correction deltas, with bootstrap intervals, computed from trajectories alone.

The unit of analysis is the EXAMPLE, not the trajectory: a method that fans one question out into n samples
(`q17/a0`, `q17/a1`, ...) must not weigh that question n times. Every per-example value is therefore the mean over
the example's trajectories, every headline number is the mean over examples, and the bootstrap resamples example
ids. Differences between rounds are bootstrapped as the mean of per-example differences, so both rounds always see
the same resample (a paired bootstrap): the interval of Δ is much tighter than two independent intervals suggest.

Round t of a trajectory is its t-th model answer (`Trajectory.model_turns()`, t = 1 is the first answer). A
trajectory that stopped early keeps its last answer for later rounds: a method that stops when the model is
confident has *answered*, and dropping it would make later rounds look at a shrinking, easier subset.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence
from typing import Any

import numpy as np

from selfcorrect.trajectory import Trajectory, Turn

TRANSITIONS = ("I->C", "C->C", "C->I", "I->I")
#: How the flips read on screen; `i_to_c` (incorrect -> correct) and `c_to_i` are their names in code and files.
FLIP_LABELS = {"i_to_c": "I->C", "c_to_i": "C->I"}


def answer_at(trajectory: Trajectory, t: int) -> Turn | None:
    """The answer a trajectory stands by at round t (1-based), carrying the last one forward; None if none yet."""
    if t < 1:
        raise ValueError(f"rounds are numbered from 1, got {t}")
    turns = trajectory.model_turns()
    return turns[min(t, len(turns)) - 1] if turns else None


def correct_at(trajectory: Trajectory, t: int) -> bool:
    """Whether the round-t answer is correct. A missing answer or an unscored one counts as wrong, not as absent,
    so that a run with failures cannot look better than one without."""
    turn = answer_at(trajectory, t)
    return turn is not None and turn.verdict is not None and turn.verdict.correct


def n_rounds(trajectories: Sequence[Trajectory]) -> int:
    """The number of rounds the longest trajectory reached."""
    return max((len(t.model_turns()) for t in trajectories), default=0)


def per_example(trajectories: Sequence[Trajectory],
                value: Callable[[Trajectory], float]) -> tuple[list[str], np.ndarray]:
    """`value` averaged over each example's trajectories: (example ids, values), ids sorted so that the bootstrap
    draws the same resamples whatever order the samples file lists them in."""
    groups: dict[str, list[float]] = {}
    for traj in trajectories:
        groups.setdefault(traj.example.id, []).append(float(value(traj)))
    ids = sorted(groups)
    return ids, np.array([np.mean(groups[i]) for i in ids], dtype=float)


def _correctness(trajectories: Sequence[Trajectory], t: int) -> np.ndarray:
    return per_example(trajectories, lambda traj: correct_at(traj, t))[1]


def _flips(trajectories: Sequence[Trajectory], t1: int, t2: int, before: bool, after: bool) -> np.ndarray:
    """Per-example share of samples that were `before`-correct at t1 and `after`-correct at t2."""
    return per_example(trajectories,
                       lambda traj: correct_at(traj, t1) == before and correct_at(traj, t2) == after)[1]


def _mean(values: np.ndarray) -> float:
    if values.size == 0:
        raise ValueError("no trajectories to measure")
    return float(values.mean())


def accuracy_by_round(trajectories: Sequence[Trajectory], rounds: int | None = None) -> list[float]:
    """Example-weighted accuracy at rounds 1..rounds (default: as many rounds as the longest trajectory)."""
    rounds = n_rounds(trajectories) if rounds is None else rounds
    return [_mean(_correctness(trajectories, t)) for t in range(1, rounds + 1)]


def delta(trajectories: Sequence[Trajectory], t1: int = 1, t2: int = 2) -> float:
    """Δ = acc@t2 − acc@t1: the net effect of correcting."""
    return _mean(_correctness(trajectories, t2) - _correctness(trajectories, t1))


def delta_i_to_c(trajectories: Sequence[Trajectory], t1: int = 1, t2: int = 2) -> float:
    """Δi→c: share of all samples wrong at t1 and right at t2 (fixes). Δ = Δi→c − Δc→i."""
    return _mean(_flips(trajectories, t1, t2, before=False, after=True))


def delta_c_to_i(trajectories: Sequence[Trajectory], t1: int = 1, t2: int = 2) -> float:
    """Δc→i: share of all samples right at t1 and wrong at t2 (breakages), the cost that Δ alone hides."""
    return _mean(_flips(trajectories, t1, t2, before=True, after=False))


def transition_counts(trajectories: Sequence[Trajectory], t1: int = 1, t2: int = 2) -> dict[str, int]:
    """Raw counts of trajectories per transition (not example-weighted): what a reader checks by hand."""
    counts = dict.fromkeys(TRANSITIONS, 0)
    for traj in trajectories:
        before, after = ("C" if correct_at(traj, t) else "I" for t in (t1, t2))
        counts[f"{before}->{after}"] += 1
    return counts


def bootstrap_ci(values_per_example: Sequence[float] | np.ndarray,
                 stat: Callable[[np.ndarray], float] = np.mean, n_boot: int = 1000, seed: int = 0,
                 level: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap interval of `stat` over examples (resampled with replacement).

    The resample indices depend only on (seed, number of examples, n_boot), so every statistic computed with one
    seed on one run sees the same resamples, and a paired difference is bootstrapped by passing per-example
    differences.
    """
    values = np.asarray(values_per_example, dtype=float)
    if values.size == 0:
        raise ValueError("bootstrap_ci needs at least one example")
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, values.size, size=(n_boot, values.size))
    stats = np.array([stat(values[row]) for row in draws], dtype=float)
    tail = (1.0 - level) / 2
    lo, hi = np.quantile(stats, [tail, 1.0 - tail])
    return float(lo), float(hi)


def grouped_bootstrap_ci(groups: Sequence[Hashable], stat: Callable[[np.ndarray], float], n_boot: int = 1000,
                         seed: int = 0, level: float = 0.95) -> tuple[float, float]:
    """`bootstrap_ci` over groups of rows resampled whole (e.g. all rounds of one question, which are not
    independent): `stat` gets the indices of the rows drawn, a group drawn twice contributing its rows twice.
    Groups are taken in sorted order, so the resamples depend only on (seed, number of groups, n_boot)."""
    labels = np.asarray(groups)
    members = [np.flatnonzero(labels == key) for key in sorted(set(groups))]

    def over_groups(picked: np.ndarray) -> float:
        return stat(np.concatenate([members[int(i)] for i in picked]))

    return bootstrap_ci(np.arange(len(members)), over_groups, n_boot=n_boot, seed=seed, level=level)


def estimate(values: np.ndarray, seed: int = 0, n_boot: int = 1000) -> dict[str, Any]:
    """A per-example mean with its percentile bootstrap interval: the `{"value", "ci"}` every results file uses."""
    lo, hi = bootstrap_ci(values, n_boot=n_boot, seed=seed)
    return {"value": float(values.mean()), "ci": [lo, hi]}


def _transition_block(trajectories: Sequence[Trajectory], t1: int, t2: int) -> dict[str, Any]:
    return {"from": t1, "to": t2, "counts": transition_counts(trajectories, t1, t2),
            "i_to_c": delta_i_to_c(trajectories, t1, t2), "c_to_i": delta_c_to_i(trajectories, t1, t2)}


def summarize(trajectories: Sequence[Trajectory], seed: int = 0, n_boot: int = 1000) -> dict[str, Any]:
    """The `metrics` block of summary.json. Deterministic for a given seed; the deltas compare rounds 1 and 2 and
    are None when no trajectory reached round 2. Transition shares are example-weighted, like Δi→c and Δc→i."""
    rounds = n_rounds(trajectories)
    n_examples = len({t.example.id for t in trajectories})
    by_round = []
    for t in range(1, rounds + 1):
        by_round.append({"round": t, **estimate(_correctness(trajectories, t), seed, n_boot), "n": n_examples})
    metrics: dict[str, Any] = {"accuracy_by_round": by_round, "delta": None, "delta_i_to_c": None,
                               "delta_c_to_i": None, "transitions": [], "n_examples": n_examples,
                               "n_trajectories": len(trajectories)}
    if rounds >= 2:
        metrics["delta"] = estimate(_correctness(trajectories, 2) - _correctness(trajectories, 1), seed, n_boot)
        metrics["delta_i_to_c"] = estimate(_flips(trajectories, 1, 2, before=False, after=True), seed, n_boot)
        metrics["delta_c_to_i"] = estimate(_flips(trajectories, 1, 2, before=True, after=False), seed, n_boot)
        metrics["transitions"] = [_transition_block(trajectories, t, t + 1) for t in range(1, rounds)]
    return metrics


def _row(label: str, estimate: dict[str, Any], signed: bool = False) -> str:
    fmt = "{:+.3f}" if signed else "{:.3f}"
    lo, hi = estimate["ci"]
    return f"{label:<14}{fmt.format(estimate['value']):>7}  [{fmt.format(lo)}, {fmt.format(hi)}]"


def format_table(metrics: dict[str, Any]) -> str:
    """A plain-text table of a `summarize` block for the terminal: accuracy per round, then Δ, Δi→c, Δc→i (rounds
    1→2), each with its 95% interval. Labels are the summary.json keys, so the table and the file read alike."""
    lines = [f"examples {metrics['n_examples']}, trajectories {metrics['n_trajectories']}"]
    lines += [_row(f"acc@t{row['round']}", row) for row in metrics["accuracy_by_round"]]
    for key in ("delta", "delta_i_to_c", "delta_c_to_i"):
        if metrics[key] is not None:
            lines.append(_row(key, metrics[key], signed=key == "delta"))
    return "\n".join(lines)
