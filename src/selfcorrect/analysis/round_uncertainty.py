"""The `uncertainty` block of summary.json: per round, how unsure the model was, from saved trajectories alone.

Per round t (the t-th model answer; unlike accuracy nothing is carried forward, a stopped trajectory produced
nothing to be unsure about):
- `mean_nll`, `mean_entropy`: token level, from each answer's stored `LogprobSummary`;
- `answer_entropy`: sample level, the entropy of {the answer itself} ∪ {the `--samples` extra answers drawn from
  the same context} (metadata["samples"][t]), grouped after normalisation, averaged over trajectories. Free-text
  answers can instead be grouped by meaning with `cluster=` (e.g. `nli_clusters` with an NLI model);
- `option`: for multiple-choice tasks scored by the hf backend (metadata["option_nll"][t]), the mean confidence of
  the argmax option (normalised exp(−mean NLL), the paper's logit confidence), that option's accuracy against the
  gold, and the ECE over 10 equal-width bins with its bins.
"""

from __future__ import annotations

import string
from collections.abc import Callable, Hashable, Sequence
from typing import Any

import numpy as np

from selfcorrect.analysis.uncertainty import (
    answer_entropy,
    expected_calibration_error,
    option_prediction,
    per_round_uncertainty,
)
from selfcorrect.trajectory import Trajectory, Turn

Cluster = Callable[[list[str]], list[Hashable]]
"""Maps a round's answers (the answer first, then the extra samples) to one cluster label each."""


def answer_key(turn: Turn) -> str:
    """What a sample contributes to the answer distribution: the extracted answer, or the text if none was found."""
    return turn.extracted if turn.extracted is not None else turn.text


def _round_answers(traj: Trajectory, t: int) -> list[str] | None:
    samples = traj.metadata.get("samples", {}).get(str(t))
    turns = traj.model_turns()
    if samples is None or len(turns) < t:
        return None
    return [answer_key(turns[t - 1]), *samples]


def _answer_entropy(answers: list[str], cluster: Cluster | None) -> float:
    if cluster is None:
        return answer_entropy(answers)
    labels = [str(label) for label in cluster(answers)]
    return answer_entropy(labels, normalize=lambda s: s)


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


def uncertainty_by_round(trajectories: Sequence[Trajectory], cluster: Cluster | None = None) -> list[dict[str, Any]]:
    """One entry per round: token-level NLL and entropy, answer entropy over samples, option confidence and ECE."""
    rows = per_round_uncertainty(trajectories)
    for row in rows:
        t = row["round"]
        sets = [a for a in (_round_answers(traj, t) for traj in trajectories) if a is not None]
        row["answer_entropy"] = float(np.mean([_answer_entropy(a, cluster) for a in sets])) if sets else None
        row["answer_entropy_n"] = len(sets)
        row["samples_per_answer"] = len(sets[0]) if sets else 0
        row["option"] = option_block(trajectories, t)
    return rows


def nli_clusters(texts: Sequence[str], entails: Callable[[str, str], bool]) -> list[int]:
    """Semantic clusters by bidirectional entailment (Kuhn et al. 2023): a text joins the first cluster whose
    first member it entails and is entailed by, else opens a new one. `entails(a, b)` must come from an NLI model
    (e.g. a DeBERTa MNLI classifier saying a ⊨ b); none ships with selfcorrect, so this is a hook, not a default."""
    representatives: list[str] = []
    labels = []
    for text in texts:
        for index, rep in enumerate(representatives):
            if entails(text, rep) and entails(rep, text):
                labels.append(index)
                break
        else:
            representatives.append(text)
            labels.append(len(representatives) - 1)
    return labels
