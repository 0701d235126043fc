"""Latent concepts: hidden states stored per round, a linear probe for a concept, and its activation over rounds.

Storage. When `eval` runs with `hidden_layer`, the hf backend returns the hidden state of that layer at the last
prompt token of every answer request, i.e. the model's state just before it answers round t. A chunk's states are
written as `hidden/round-<t>.chunk-<c>.npz` (arrays `ids`, `states`, `layer`) before the chunk's trajectories reach
samples.jsonl, so a resumed run finds the states of every trajectory it kept, and a regenerated chunk overwrites
its files with identical content.

The concept probed is a property of the answer in context: the state before answering round t >= 2 has the
round t−1 answer in its context (the sandbox template shows exactly question + previous answer), labelled by
`CONCEPTS`: "the answer in context is wrong" (any task), or, on BBQ, "the answer in context is the stereotyped
one". A logistic-regression probe (L2, numpy, standardised features, deterministic full-batch
Nesterov gradient descent) is trained on one set of examples' rounds and evaluated on held-out examples: AUROC with
a bootstrap interval that resamples examples (their rounds together). The paper's (arXiv 2406.02378) analysis then
follows: per round, the mean probe score and mean cosine between the state and the probe direction ("concept
activation"), and Pearson r between that activation and the answers' uncertainty over rounds.

Two controls come with every probe: the in-context answer's own mean NLL as the score (no hidden state), and the
same probe fitted on each row's round-1 state, the question alone (it can read only the question's difficulty).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from selfcorrect.config import StrictModel
from selfcorrect.errors import SelfCorrectError
from selfcorrect.trajectory import Trajectory

HIDDEN_DIR = "hidden"
PROBE_FILE = "probe.json"


class HiddenStore:
    """Collects one chunk's hidden states (round -> id -> vector) and writes them beside the run."""

    def __init__(self, layer: int) -> None:
        self.layer = layer
        self.states: dict[int, dict[str, list[float]]] = {}

    def add(self, trajectory_id: str, round_index: int, states: dict[int, list[float]]) -> None:
        self.states.setdefault(round_index, {})[trajectory_id] = states[self.layer]

    def save(self, run_dir: str | Path, chunk_index: int) -> None:
        folder = Path(run_dir) / HIDDEN_DIR
        folder.mkdir(parents=True, exist_ok=True)
        for round_index, by_id in sorted(self.states.items()):
            ids = sorted(by_id)
            _atomic_savez(folder / f"round-{round_index}.chunk-{chunk_index}.npz", ids=np.array(ids, dtype=str),
                          states=np.array([by_id[i] for i in ids], dtype=np.float32), layer=np.array(self.layer))
        self.states = {}


def _atomic_savez(path: Path, **arrays: Any) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            np.savez(handle, **arrays)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load_hidden(run_dir: str | Path) -> tuple[int, dict[int, dict[str, np.ndarray]]]:
    """(layer, round -> trajectory id -> state) of a run; one line and exit 2 if the run stored none."""
    files = sorted((Path(run_dir) / HIDDEN_DIR).glob("round-*.chunk-*.npz"))
    if not files:
        raise SelfCorrectError(f"{run_dir} has no hidden states; run `selfcorrect eval` with --hidden-layer "
                               "(hf backend) to store them")
    layers, by_round = set(), {}
    for file in files:
        round_index = int(file.name.split(".")[0].removeprefix("round-"))
        with np.load(file) as data:
            layers.add(int(data["layer"]))
            by_round.setdefault(round_index, {}).update(zip(data["ids"].tolist(), data["states"], strict=True))
    if len(layers) != 1:
        raise SelfCorrectError(f"{run_dir}: hidden states of several layers {sorted(layers)} in one run")
    return layers.pop(), by_round


# ---------------------------------------------------------------------------------------------------------------
# The probe


@dataclass
class LinearProbe:
    """p(concept | h) = sigmoid(w·h + b), with w and b expressed in the raw (unstandardised) feature space."""

    weights: np.ndarray
    bias: float

    def score(self, features: np.ndarray) -> np.ndarray:
        return 1.0 / (1.0 + np.exp(-(features @ self.weights + self.bias)))

    def cosine(self, features: np.ndarray) -> np.ndarray:
        """Cosine between each state and the probe direction w: the concept's activation, scale-free."""
        norms = np.linalg.norm(features, axis=1) * np.linalg.norm(self.weights)
        return (features @ self.weights) / np.where(norms == 0, 1.0, norms)


def fit_probe(features: np.ndarray, labels: np.ndarray, l2: float = 1e-2, steps: int = 2000) -> LinearProbe:
    """L2-regularised logistic regression by Nesterov gradient descent on standardised features.

    Minimises mean log-loss + l2/2·|w|² (bias unpenalised) with step 1/L, L the gradient's Lipschitz bound
    (|X|₂²/(4n) + l2), from zero: deterministic, and convex so the start does not matter.
    """
    x = np.asarray(features, dtype=np.float64)
    y = np.asarray(labels, dtype=np.float64)
    if x.ndim != 2 or x.shape[0] != y.shape[0] or x.shape[0] == 0:
        raise ValueError("fit_probe needs a (n, d) feature matrix and n labels")
    if len(set(y.tolist())) < 2:
        raise SelfCorrectError("cannot train a probe: every training example has the same label")
    mean, scale = x.mean(axis=0), x.std(axis=0)
    scale = np.where(scale == 0, 1.0, scale)
    z = np.hstack([(x - mean) / scale, np.ones((x.shape[0], 1))])
    step = 1.0 / (np.linalg.norm(z, 2) ** 2 / (4 * z.shape[0]) + l2)
    penalty = np.full(z.shape[1], l2)
    penalty[-1] = 0.0
    theta = np.zeros(z.shape[1])
    previous = theta.copy()
    for k in range(1, steps + 1):
        look = theta + (k - 1) / (k + 2) * (theta - previous)
        grad = z.T @ (1.0 / (1.0 + np.exp(-(z @ look))) - y) / z.shape[0] + penalty * look
        previous, theta = theta, look - step * grad
    weights = theta[:-1] / scale
    return LinearProbe(weights=weights, bias=float(theta[-1] - weights @ mean))


def auroc(scores: Sequence[float], labels: Sequence[bool]) -> float:
    """Area under the ROC curve = P(score of a positive > score of a negative), ties counting one half
    (the Mann-Whitney U statistic with average ranks)."""
    s = np.asarray(scores, dtype=float)
    y = np.asarray(labels, dtype=bool)
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    order = np.argsort(s, kind="mergesort")
    ranks = np.empty(len(s))
    sorted_s = s[order]
    start = 0
    while start < len(s):  # average ranks over runs of tied scores
        end = start
        while end + 1 < len(s) and sorted_s[end + 1] == sorted_s[start]:
            end += 1
        ranks[order[start:end + 1]] = (start + end) / 2 + 1
        start = end + 1
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


# ---------------------------------------------------------------------------------------------------------------
# The concept over a run


@dataclass
class Rows:
    """One row per (trajectory, round) with a stored state: the data a probe trains or is evaluated on."""

    example_ids: list[str]
    rounds: np.ndarray
    features: np.ndarray
    labels: np.ndarray  # 1 = the answer in context is wrong; -1 = no answer in context yet (round 1)
    nll: np.ndarray  # mean NLL of the answer given at that round (nan if not stored)
    context_nll: np.ndarray  # mean NLL of the answer in context, i.e. of round t - 1 (nan at round 1)
    question_features: np.ndarray  # the same trajectory's round-1 state: the question alone (nan if not stored)


def _answer_wrong(trajectory: Trajectory, t: int) -> int:
    """1 when the round-t answer is wrong."""
    from selfcorrect.analysis.metrics import correct_at

    return int(not correct_at(trajectory, t))


def _answer_stereotyped(trajectory: Trajectory, t: int) -> int:
    """BBQ: 1 when the round-t answer is the stereotyped one (analysis/applications.py's bias rule), 0 when it names
    the other person; -1 (unlabelled) for an "unknown" answer, no option, or an item whose target is unknown, as
    the bias score leaves those out."""
    from selfcorrect.analysis.applications import stereotyped_at

    stereotyped = stereotyped_at(trajectory, t)
    return -1 if stereotyped is None else int(stereotyped)


#: Concept name -> label of the answer in context (the round t - 1 answer seen before answering round t).
CONCEPTS: dict[str, Callable[[Trajectory, int], int]] = {
    "answer-in-context-is-wrong": _answer_wrong,
    "answer-in-context-is-stereotyped": _answer_stereotyped,
}


def concept_rows(trajectories: Sequence[Trajectory], hidden: dict[int, dict[str, np.ndarray]],
                 concept: str = "answer-in-context-is-wrong") -> Rows:
    label_of = CONCEPTS[concept]
    ex_ids, rounds, feats, labels, nlls, context_nlls, questions = [], [], [], [], [], [], []
    for traj in trajectories:
        turns = traj.model_turns()
        question = hidden.get(1, {}).get(traj.id)
        for round_index in sorted(hidden):
            state = hidden[round_index].get(traj.id)
            if state is None or len(turns) < round_index:
                continue
            logprobs = turns[round_index - 1].logprobs
            before = turns[round_index - 2].logprobs if round_index > 1 else None
            ex_ids.append(traj.example.id)
            rounds.append(round_index)
            feats.append(state)
            labels.append(-1 if round_index == 1 else label_of(traj, round_index - 1))
            nlls.append(logprobs.mean_nll if logprobs is not None else np.nan)
            context_nlls.append(before.mean_nll if before is not None else np.nan)
            questions.append(question if question is not None else np.full(len(state), np.nan))
    if not feats:
        raise SelfCorrectError("no stored hidden state matches a trajectory of this run")
    return Rows(ex_ids, np.array(rounds), np.array(feats, dtype=np.float64), np.array(labels), np.array(nlls),
                np.array(context_nlls), np.array(questions, dtype=np.float64))


def _subset(rows: Rows, keep: np.ndarray) -> Rows:
    return Rows([e for e, k in zip(rows.example_ids, keep, strict=True) if k], rows.rounds[keep],
                rows.features[keep], rows.labels[keep], rows.nll[keep], rows.context_nll[keep],
                rows.question_features[keep])


def _labelled(rows: Rows) -> Rows:
    return _subset(rows, rows.labels >= 0)


def split_examples(rows: Rows, held_out: float, seed: int) -> tuple[Rows, Rows]:
    """Disjoint (train, held-out) rows by example: every round of an example lands on the same side."""
    examples = sorted(set(rows.example_ids))
    rng = np.random.default_rng(seed)
    chosen = set(rng.permutation(examples)[:round(len(examples) * held_out)].tolist())
    mask = np.array([e in chosen for e in rows.example_ids])
    return _subset(rows, ~mask), _subset(rows, mask)


def auroc_with_interval(scores: np.ndarray, labels: np.ndarray, example_ids: list[str], seed: int,
                        n_boot: int = 1000) -> dict[str, Any]:
    """AUROC and its percentile bootstrap interval, resampling examples (all their rounds together)."""
    from selfcorrect.analysis.metrics import grouped_bootstrap_ci

    lo, hi = grouped_bootstrap_ci(example_ids, lambda rows: auroc(scores[rows], labels[rows]), n_boot=n_boot,
                                  seed=seed)
    return {"value": auroc(scores, labels), "ci": [lo, hi], "n_rows": len(scores),
            "n_examples": len(set(example_ids)), "positive_rate": float(np.mean(labels))}


def _nll_baseline(rows: Rows, config: ProbeConfig) -> dict[str, Any] | None:
    """The same held-out question answered without hidden states: does the in-context answer's own mean NLL
    (its uncertainty) tell whether it is wrong? The bar a probe has to clear to show a latent concept."""
    known = np.isfinite(rows.context_nll)
    if known.sum() == 0:
        return None
    return auroc_with_interval(rows.context_nll[known], rows.labels[known],
                               [e for e, k in zip(rows.example_ids, known, strict=True) if k], config.seed,
                               config.n_boot)


def _question_only_control(probe: LinearProbe, fit_rows: Rows, eval_rows: Rows,
                           config: ProbeConfig) -> dict[str, Any] | None:
    """The same probe fitted on the question alone (each row's round-1 state, no answer in context yet): what it
    reads there is the question's difficulty, so the answer-in-context probe shows a concept only above this.
    `probe_minus_control` is the paired AUROC difference on the same held-out rows, resampling examples."""
    from selfcorrect.analysis.metrics import grouped_bootstrap_ci

    fit_known = np.isfinite(fit_rows.question_features).all(axis=1)
    eval_known = np.isfinite(eval_rows.question_features).all(axis=1)
    if not fit_known.any() or not eval_known.any() or len(set(fit_rows.labels[fit_known].tolist())) < 2:
        return None
    control = fit_probe(fit_rows.question_features[fit_known], fit_rows.labels[fit_known], l2=config.l2)
    labels = eval_rows.labels[eval_known]
    ids = [e for e, k in zip(eval_rows.example_ids, eval_known, strict=True) if k]
    control_scores = control.score(eval_rows.question_features[eval_known])
    probe_scores = probe.score(eval_rows.features[eval_known])

    def gap(rows: np.ndarray) -> float:
        return auroc(probe_scores[rows], labels[rows]) - auroc(control_scores[rows], labels[rows])

    lo, hi = grouped_bootstrap_ci(ids, gap, n_boot=config.n_boot, seed=config.seed)
    return {**auroc_with_interval(control_scores, labels, ids, config.seed, config.n_boot),
            "probe_minus_control": {"value": gap(np.arange(len(labels))), "ci": [lo, hi]}}


def activation_by_round(probe: LinearProbe, rows: Rows) -> list[dict[str, Any]]:
    """Mean probe score and mean cosine with the probe direction per round (round 1 included: no label needed)."""
    scores, cosines = probe.score(rows.features), probe.cosine(rows.features)
    out = []
    for round_index in sorted(set(rows.rounds.tolist())):
        at = rows.rounds == round_index
        nll = rows.nll[at]
        out.append({"round": round_index, "mean_score": float(scores[at].mean()),
                    "mean_cosine": float(cosines[at].mean()),
                    "mean_nll": float(np.nanmean(nll)) if np.isfinite(nll).any() else None, "n": int(at.sum())})
    return out


def correlations(probe: LinearProbe, rows: Rows, by_round: list[dict[str, Any]]) -> dict[str, Any]:
    """Pearson r (two-sided p) of concept activation against answer uncertainty (mean NLL): over rounds, as the
    paper does (few points, little power), and over every (trajectory, round) row."""
    from selfcorrect.analysis.uncertainty import pearson

    result: dict[str, Any] = {}
    points = [r for r in by_round if r["mean_nll"] is not None]
    for key in ("mean_score", "mean_cosine"):
        if len(points) >= 3:
            r, p = pearson([x[key] for x in points], [x["mean_nll"] for x in points])
            result[f"over_rounds_{key}_vs_nll"] = {"r": r, "p": p, "n": len(points)}
    finite = np.isfinite(rows.nll)
    if finite.sum() >= 3:
        r, p = pearson(probe.score(rows.features[finite]), rows.nll[finite])
        result["over_rows_score_vs_nll"] = {"r": r, "p": p, "n": int(finite.sum())}
    return result


class ProbeConfig(StrictModel):
    """The probe's settings (`selfcorrect probe --config/--set`): a typed config like every other, so a typo fails."""

    concept: Literal["answer-in-context-is-wrong", "answer-in-context-is-stereotyped"] = "answer-in-context-is-wrong"
    l2: float = 1e-2
    held_out: float = 0.5
    seed: int = 0
    n_boot: int = 1000


def probe_run(run_dir: str | Path, train_dir: str | Path | None = None,
              config: ProbeConfig | None = None) -> dict[str, Any]:
    """Train the concept probe (on `train_dir`'s rounds, or on a seeded half of this run's examples), evaluate it on
    the rest, and write `probe.json` (+ `probe.npz`, the weights) into `run_dir`."""
    config = config or ProbeConfig()
    from selfcorrect.runs import RunFolder, write_json

    layer, hidden = load_hidden(run_dir)
    rows = concept_rows(RunFolder(Path(run_dir)).read_samples(), hidden, config.concept)
    if train_dir is None:
        train, test = split_examples(rows, config.held_out, config.seed)
        source = f"seeded {1 - config.held_out:.0%} of this run's examples (seed {config.seed})"
    else:
        train_layer, train_hidden = load_hidden(train_dir)
        if train_layer != layer:
            raise SelfCorrectError(f"{train_dir} stored layer {train_layer}, {run_dir} layer {layer}")
        train = concept_rows(RunFolder(Path(train_dir)).read_samples(), train_hidden, config.concept)
        test, source = rows, str(train_dir)
    fit_rows, eval_rows = _labelled(train), _labelled(test)
    probe = fit_probe(fit_rows.features, fit_rows.labels, l2=config.l2)
    by_round = activation_by_round(probe, test)
    result = {"concept": config.concept, "layer": layer, "token": "last prompt token (just before the answer)",
              "trained_on": source, "n_train_rows": len(fit_rows.labels), "l2": config.l2, "seed": config.seed,
              "train_auroc": auroc(probe.score(fit_rows.features), fit_rows.labels),
              "held_out_auroc": auroc_with_interval(probe.score(eval_rows.features), eval_rows.labels,
                                                    eval_rows.example_ids, config.seed, config.n_boot),
              "nll_baseline_auroc": _nll_baseline(eval_rows, config),
              "question_only_auroc": _question_only_control(probe, fit_rows, eval_rows, config),
              "activation_by_round": by_round, "correlation": correlations(probe, test, by_round)}
    _atomic_savez(Path(run_dir) / "probe.npz", weights=probe.weights, bias=np.array(probe.bias),
                  layer=np.array(layer))
    write_json(Path(run_dir) / PROBE_FILE, result)
    return result
