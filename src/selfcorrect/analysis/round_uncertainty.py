"""The `uncertainty` block of summary.json: per round, how unsure the model was, from saved trajectories alone.

Per round t (the t-th model answer; unlike accuracy nothing is carried forward, a stopped trajectory produced
nothing to be unsure about):
- `mean_nll`, `mean_entropy`: token level, from each answer's stored `LogprobSummary`;
- `answer_entropy`: sample level, the entropy of {the answer itself} ∪ {the `--samples` extra answers drawn from
  the same context} (metadata["samples"][t]), grouped after normalisation, averaged over trajectories. Free-text
  answers can instead be grouped by meaning with `grouping=` (`nli_grouping`: bidirectional entailment);
- `option`: for multiple-choice tasks scored by the hf backend (metadata["option_nll"][t]), the mean confidence of
  the argmax option (normalised exp(−mean NLL), the paper's logit confidence), that option's accuracy against the
  gold, and the ECE over 10 equal-width bins with its bins.
"""

from __future__ import annotations

import string
from collections.abc import Callable, Hashable, Sequence
from typing import Any

import numpy as np

from selfcorrect.analysis.nli import Entails, semantic_clusters
from selfcorrect.analysis.uncertainty import (
    answer_entropy,
    expected_calibration_error,
    option_prediction,
    per_round_uncertainty,
)
from selfcorrect.trajectory import Trajectory, Turn

Grouping = Callable[[list[tuple[str, list[str]]]], list[list[Hashable]]]
"""Maps every (question, answers) set of a round (answers: the answer first, then the extra samples) to one cluster
label per answer, in one call, so a model behind it sees the whole round as one batch."""


def nli_grouping(entails: Entails) -> Grouping:
    """Grouping by bidirectional entailment, each answer judged together with its question (Kuhn et al. 2023)."""
    def group(sets: list[tuple[str, list[str]]]) -> list[list[Hashable]]:
        return semantic_clusters([[f"{q} {a}" for a in answers] for q, answers in sets], entails)

    return group


def answer_key(turn: Turn) -> str:
    """What a sample contributes to the answer distribution: the extracted answer, or the text if none was found."""
    return turn.extracted if turn.extracted is not None else turn.text


def _round_answers(traj: Trajectory, t: int) -> tuple[str, list[str]] | None:
    samples = traj.metadata.get("samples", {}).get(str(t))
    turns = traj.model_turns()
    if samples is None or len(turns) < t:
        return None
    return traj.turns[0].text, [answer_key(turns[t - 1]), *samples]


def _answer_entropies(sets: list[tuple[str, list[str]]], grouping: Grouping | None) -> list[float]:
    if grouping is None:
        return [answer_entropy(answers) for _, answers in sets]
    return [answer_entropy([str(label) for label in labels], normalize=lambda s: s) for labels in grouping(sets)]


def _gold_index(traj: Trajectory) -> int | None:
    gold = traj.example.gold
    if isinstance(gold, bool):
        return None
    if isinstance(gold, int):
        return gold
    if isinstance(gold, str) and len(gold.strip()) == 1 and gold.strip().lower() in string.ascii_lowercase:
        return string.ascii_lowercase.index(gold.strip().lower())
    return None


def option_block(trajectories: Sequence[Trajectory], t: int, n_bins: int = 10) -> dict[str, Any] | None:
    """Logit confidence and calibration of the round-t option scores, or None when no trajectory has them."""
    confidences, hits = [], []
    for traj in trajectories:
        nlls = traj.metadata.get("option_nll", {}).get(str(t))
        gold = _gold_index(traj)
        if nlls is None or gold is None or any(v is None for v in nlls):
            continue
        best, confidence = option_prediction(nlls)
        confidences.append(confidence)
        hits.append(best == gold)
    if not confidences:
        return None
    ece, bins = expected_calibration_error(confidences, hits, n_bins=n_bins)
    return {"mean_confidence": float(np.mean(confidences)), "accuracy": float(np.mean(hits)), "ece": ece,
            "bins": bins, "n": len(confidences)}


def uncertainty_by_round(trajectories: Sequence[Trajectory], grouping: Grouping | None = None
                         ) -> list[dict[str, Any]]:
    """One entry per round: token-level NLL and entropy, answer entropy over samples, option confidence and ECE."""
    rows = per_round_uncertainty(trajectories)
    for row in rows:
        t = row["round"]
        sets = [a for a in (_round_answers(traj, t) for traj in trajectories) if a is not None]
        row["answer_entropy"] = float(np.mean(_answer_entropies(sets, grouping))) if sets else None
        row["answer_entropy_n"] = len(sets)
        row["samples_per_answer"] = len(sets[0][1]) if sets else 0
        row["option"] = option_block(trajectories, t)
    return rows
