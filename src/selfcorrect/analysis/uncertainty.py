"""Uncertainty measures of intrinsic self-correction (arXiv 2406.02378), as pure functions of saved numbers.

Everything here reads token log-probabilities, entropies or answers that a run already stored, so uncertainty can
be recomputed from a run folder without a model. The measures:

- token level: mean token entropy and mean negative log-likelihood of an output;
- sample level: Shannon entropy of the answers over n samples (how much the model disagrees with itself);
- option level: the paper's "logit confidence", exp(−mean NLL) of each option normalised over options;
- calibration: expected calibration error over 10 equal-width bins, with the per-bin table for a reliability plot;
- the link between per-round series: Pearson r with a two-sided p-value (the t test, computed without scipy).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from selfcorrect.analysis.metrics import n_rounds
from selfcorrect.trajectory import Trajectory


def _mean(values: Sequence[float], what: str) -> float:
    if len(values) == 0:
        raise ValueError(f"{what} of an empty output is undefined")
    return float(np.mean(values))


def mean_token_entropy(entropies: Sequence[float]) -> float:
    """Mean entropy (nats) of the model's next-token distributions over an output."""
    return _mean(entropies, "mean token entropy")


def mean_nll(logprobs: Sequence[float]) -> float:
    """Mean negative log-likelihood per token: length-normalised, so long and short answers compare."""
    return -_mean(logprobs, "mean NLL")


def casefold_answer(answer: str) -> str:
    """Case- and whitespace-insensitive form, so 'Paris' and ' paris ' count as one answer."""
    return " ".join(answer.lower().split())


def answer_entropy(answers: Sequence[str | None], normalize: Callable[[str], str] = casefold_answer) -> float:
    """Shannon entropy (nats) of the empirical distribution of normalised answers over n samples. Unextracted
    answers (None) form one group of their own: failing to answer is itself a consistent behaviour."""
    if not answers:
        raise ValueError("answer entropy needs at least one answer")
    counts = Counter(None if a is None else normalize(a) for a in answers)
    probs = np.array(list(counts.values()), dtype=float) / len(answers)
    return float(-(probs * np.log(probs)).sum())


def option_confidence(option_mean_nlls: Sequence[float]) -> list[float]:
    """exp(−mean NLL) of each option, normalised to sum to 1 (the paper's logit confidence). The minimum NLL is
    subtracted first; it cancels in the normalisation and keeps exp() from underflowing on long options."""
    nlls = np.asarray(option_mean_nlls, dtype=float)
    if nlls.size == 0:
        raise ValueError("option confidence needs at least one option")
    weights = np.exp(-(nlls - nlls.min()))
    return (weights / weights.sum()).tolist()


def option_prediction(option_mean_nlls: Sequence[float]) -> tuple[int, float]:
    """(index of the predicted option, its confidence): the argmax of `option_confidence` and its probability."""
    probs = option_confidence(option_mean_nlls)
    best = int(np.argmax(probs))
    return best, probs[best]


def expected_calibration_error(confidences: Sequence[float], correct: Sequence[bool], n_bins: int = 10
                               ) -> tuple[float, list[dict[str, Any]]]:
    """ECE over equal-width bins of [0, 1]: bin i covers (i/n, (i+1)/n], the first bin also holds 0.

    Returns (ECE, bins); each bin is {"lo", "hi", "count", "accuracy", "confidence"}, the last two None when the bin
    is empty. Fixed bins (not the min..max of the observed confidences, as the paper's code does) make ECE values
    of different rounds and runs comparable.
    """
    conf = np.asarray(confidences, dtype=float)
    hits = np.asarray(correct, dtype=float)
    if conf.size == 0 or conf.shape != hits.shape:
        raise ValueError("ECE needs as many correctness labels as confidences, at least one")
    if ((conf < 0) | (conf > 1)).any():
        raise ValueError("confidences must lie in [0, 1]")
    edges = np.arange(n_bins + 1) / n_bins  # i / n, correctly rounded: 0.3 lands in (0.2, 0.3], not (0.3, 0.4]
    index = np.maximum(np.searchsorted(edges, conf, side="left") - 1, 0)
    ece, bins = 0.0, []
    for i in range(n_bins):
        members = index == i
        count = int(members.sum())
        bin_row: dict[str, Any] = {"lo": float(edges[i]), "hi": float(edges[i + 1]), "count": count,
                                   "accuracy": None, "confidence": None}
        if count:
            bin_row["accuracy"] = float(hits[members].mean())
            bin_row["confidence"] = float(conf[members].mean())
            ece += count / conf.size * abs(bin_row["accuracy"] - bin_row["confidence"])
        bins.append(bin_row)
    return float(ece), bins


def _betacf(a: float, b: float, x: float, max_iter: int = 300, eps: float = 1e-15) -> float:
    """Continued fraction of the incomplete beta function (modified Lentz), converging fast for x < (a+1)/(a+b+2)."""
    tiny = 1e-300
    c, d = 1.0, 1.0 - (a + b) * x / (a + 1.0)
    d = 1.0 / (d if abs(d) > tiny else tiny)
    result = d
    for m in range(1, max_iter + 1):
        for numerator in (m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m)),
                          -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1))):
            d = 1.0 + numerator * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + numerator / c
            c = c if abs(c) > tiny else tiny
            result *= c * d
        if abs(c * d - 1.0) < eps:
            return result
    raise ArithmeticError(f"incomplete beta continued fraction did not converge for a={a}, b={b}, x={x}")


def regularized_incomplete_beta(a: float, b: float, x: float) -> float:
    """I_x(a, b), the CDF of a Beta(a, b) variable: what the t test's p-value reduces to."""
    if not 0.0 <= x <= 1.0:
        raise ValueError(f"x must lie in [0, 1], got {x}")
    if x in (0.0, 1.0):
        return x
    log_front = math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    if x < (a + 1.0) / (a + b + 2.0):
        return math.exp(log_front) * _betacf(a, b, x) / a
    return 1.0 - math.exp(log_front) * _betacf(b, a, 1.0 - x) / b  # the symmetry I_x(a,b) = 1 − I_{1−x}(b,a)


def pearson(x: Sequence[float], y: Sequence[float]) -> tuple[float, float]:
    """Pearson r and its two-sided p-value under H0: r = 0 (t = r·sqrt(df/(1−r²)), df = n − 2).

    The p-value is P(|T| ≥ |t|) = I_{df/(df+t²)}(df/2, 1/2). A constant series has no correlation: (nan, nan).
    """
    xs, ys = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if xs.shape != ys.shape or xs.ndim != 1:
        raise ValueError("pearson needs two series of the same length")
    if xs.size < 3:
        raise ValueError("pearson needs at least 3 points for a p-value")
    dx, dy = xs - xs.mean(), ys - ys.mean()
    norm = math.sqrt(float((dx * dx).sum()) * float((dy * dy).sum()))
    if norm == 0.0:
        return math.nan, math.nan
    r = max(-1.0, min(1.0, float((dx * dy).sum()) / norm))
    df = xs.size - 2
    if abs(r) == 1.0:
        return r, 0.0
    t_squared = r * r * df / (1.0 - r * r)
    return r, regularized_incomplete_beta(df / 2.0, 0.5, df / (df + t_squared))


def per_round_uncertainty(trajectories: Sequence[Trajectory]) -> list[dict[str, Any]]:
    """Mean NLL and mean token entropy of the round-t answers, over the trajectories whose answer stored them.

    Unlike accuracy, nothing is carried forward: a stopped trajectory produced no new tokens to be uncertain
    about. Rounds run to the longest trajectory; a round with no stored statistic has value None and n = 0.
    """
    rounds = n_rounds(trajectories)
    nlls: list[list[float]] = [[] for _ in range(rounds)]
    entropies: list[list[float]] = [[] for _ in range(rounds)]
    for traj in trajectories:
        for index, turn in enumerate(traj.model_turns()):
            if turn.logprobs is None:
                continue
            nlls[index].append(turn.logprobs.mean_nll)
            if turn.logprobs.mean_entropy is not None:
                entropies[index].append(turn.logprobs.mean_entropy)
    return [{"round": t + 1, "mean_nll": float(np.mean(nlls[t])) if nlls[t] else None,
             "mean_entropy": float(np.mean(entropies[t])) if entropies[t] else None,
             "n": len(nlls[t])} for t in range(rounds)]
