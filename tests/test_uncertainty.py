"""Uncertainty measures against hand-computed and closed-form values."""

from __future__ import annotations

import math

import pytest

from selfcorrect.analysis.uncertainty import (
    answer_entropy,
    expected_calibration_error,
    mean_nll,
    mean_token_entropy,
    option_confidence,
    option_prediction,
    pearson,
    per_round_uncertainty,
    regularized_incomplete_beta,
)
from selfcorrect.backends.base import Backend, Generation, GenerationRequest, SamplingParams
from selfcorrect.rounds import generate, start
from selfcorrect.trajectory import Example, LogprobSummary, Trajectory, Turn


def test_token_means() -> None:
    assert mean_token_entropy([0.5, 1.0, 1.5]) == pytest.approx(1.0)
    assert mean_nll([-1.0, -2.0, -3.0]) == pytest.approx(2.0)
    with pytest.raises(ValueError):
        mean_nll([])


class _FixedTokens(Backend):
    """Answers every request with the same two tokens' log-probabilities and entropies (none for "plain")."""

    name = "fixed-tokens"

    def generate(self, requests: list[GenerationRequest]) -> list[Generation]:
        return [Generation(text="plain" if "plain" in r.messages[-1]["content"] else "7", finish_reason="stop",
                           token_logprobs=None if "plain" in r.messages[-1]["content"] else [-1.0, -3.0],
                           token_entropies=[0.2, 0.4], request_index=i) for i, r in enumerate(requests)]


def test_a_generated_turn_keeps_what_the_measures_need() -> None:
    """The production path (rounds.generate) stores each answer's token statistics as a LogprobSummary, from
    which the round's mean NLL and mean entropy are computed; a backend without logprobs stores none."""
    from selfcorrect.tasks import get_task

    task = get_task("sandbox-chain")
    trajectories = start(task, [Example(id="a", fields={}, gold="7"), Example(id="b", fields={}, gold="7")])
    for traj, question in zip(trajectories, ("q", "plain"), strict=True):
        traj.add(Turn(role="user", kind="prompt", round=1, text=question))
    trajectories = generate(_FixedTokens(), trajectories, task, kind="answer", round_index=1,
                            params=SamplingParams(temperature=0.0, max_new_tokens=4), seed=0, score=False)
    summary = trajectories[0].turns[-1].logprobs
    assert (summary.n_tokens, summary.sum_logprob) == (2, -4.0)
    assert summary.mean_entropy == pytest.approx(0.3)
    assert summary.mean_nll == pytest.approx(2.0)
    assert trajectories[1].turns[-1].logprobs is None
    block = per_round_uncertainty(trajectories[:1])
    assert block[0]["mean_nll"] == pytest.approx(2.0) and block[0]["mean_entropy"] == pytest.approx(0.3)


@pytest.mark.parametrize(("answers", "expected"), [
    (["a", "a", "b", "b"], math.log(2)),
    (["a", "b", "c"], math.log(3)),
    (["a", "a", "a", "b"], -(0.75 * math.log(0.75) + 0.25 * math.log(0.25))),
    (["Paris", " paris", "PARIS  "], 0.0),
    ([None, None, "x", "x"], math.log(2)),
    ([None, "None"], math.log(2)),  # an unextracted answer is not the string "None"
])
def test_answer_entropy(answers: list[str | None], expected: float) -> None:
    assert answer_entropy(answers) == pytest.approx(expected)


def test_answer_entropy_custom_normalisation() -> None:
    assert answer_entropy(["ab", "ac"], normalize=lambda s: s[0]) == 0.0
    assert answer_entropy(["ab", "ac"], normalize=lambda s: s) == pytest.approx(math.log(2))


def test_option_confidence() -> None:
    assert option_confidence([0.0, math.log(2)]) == pytest.approx([2 / 3, 1 / 3])
    # huge NLLs would underflow exp(); only their differences matter
    assert option_confidence([1000.0, 1001.0]) == pytest.approx([1 / (1 + math.e ** -1), 1 / (1 + math.e)])


def test_option_prediction_is_argmax_with_its_probability() -> None:
    weights = [math.exp(-1.0), math.exp(-0.5), math.exp(-2.0)]
    index, confidence = option_prediction([1.0, 0.5, 2.0])
    assert index == 1
    assert confidence == pytest.approx(weights[1] / sum(weights))


def test_ece_hand_example() -> None:
    # bins: 0.0 -> bin 0 (|0 - 0| = 0); 0.3 -> bin 2 (|1 - 0.3|); 0.35 -> bin 3 (|0 - 0.35|);
    # 0.95 and 1.0 -> bin 9 (|1 - 0.975|); ECE = (0.7 + 0.35 + 2 * 0.025) / 5 = 0.22
    ece, bins = expected_calibration_error([0.0, 0.3, 0.35, 0.95, 1.0], [False, True, False, True, True])
    assert ece == pytest.approx(0.22)
    assert [b["count"] for b in bins] == [1, 0, 1, 1, 0, 0, 0, 0, 0, 2]
    assert bins[9]["accuracy"] == 1.0 and bins[9]["confidence"] == pytest.approx(0.975)
    assert bins[1]["accuracy"] is None and bins[1]["confidence"] is None
    assert (bins[2]["lo"], bins[2]["hi"]) == (0.2, 0.3)


def test_ece_bin_edges_are_right_closed() -> None:
    _, bins = expected_calibration_error([0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0], [True] * 10)
    assert [b["count"] for b in bins] == [1] * 10


def test_ece_perfect_calibration_is_zero() -> None:
    ece, _ = expected_calibration_error([0.5, 0.5, 1.0], [True, False, True])
    assert ece == pytest.approx(0.0)


def test_ece_rejects_bad_input() -> None:
    with pytest.raises(ValueError):
        expected_calibration_error([1.2], [True])
    with pytest.raises(ValueError):
        expected_calibration_error([0.5, 0.6], [True])


def test_incomplete_beta_closed_forms() -> None:
    assert regularized_incomplete_beta(1, 1, 0.37) == pytest.approx(0.37)
    assert regularized_incomplete_beta(3, 1, 0.5) == pytest.approx(0.125)  # I_x(a, 1) = x^a
    assert regularized_incomplete_beta(4.5, 4.5, 0.5) == pytest.approx(0.5)
    # I_x(2, 3) = sum_{j=2..4} C(4, j) x^j (1-x)^(4-j); 0.3 uses the direct fraction, 0.7 the symmetry
    assert regularized_incomplete_beta(2, 3, 0.3) == pytest.approx(0.3483)
    assert regularized_incomplete_beta(2, 3, 0.7) == pytest.approx(0.9163)
    assert regularized_incomplete_beta(2, 3, 0.0) == 0.0 and regularized_incomplete_beta(2, 3, 1.0) == 1.0


def test_pearson_n3_one_degree_of_freedom() -> None:
    # r = 1 / (sqrt(2) sqrt(2)) = 0.5, t = 0.5 * sqrt(1 / 0.75) = 1/sqrt(3); df = 1 is Cauchy:
    # p = 1 - (2/pi) atan(1/sqrt(3)) = 1 - (2/pi)(pi/6) = 2/3
    r, p = pearson([1, 2, 3], [1, 3, 2])
    assert r == pytest.approx(0.5)
    assert p == pytest.approx(2 / 3)


def test_pearson_perfect_correlation_has_p_zero() -> None:
    assert pearson([1, 2, 3], [2, 4, 6]) == (pytest.approx(1.0), 0.0)
    assert pearson([1, 2, 3], [3, 2, 1]) == (pytest.approx(-1.0), 0.0)


def test_pearson_n4_two_degrees_of_freedom() -> None:
    # r = 4 / 5 = 0.8; with df = 2, p = 1 - |t| / sqrt(2 + t^2) and t^2 / (2 + t^2) = r^2, so p = 1 - |r| = 0.2
    r, p = pearson([1, 2, 3, 4], [1, 3, 2, 4])
    assert r == pytest.approx(0.8)
    t = r * math.sqrt(2 / (1 - r * r))
    assert p == pytest.approx(1 - abs(t) / math.sqrt(2 + t * t))
    assert p == pytest.approx(0.2)


def test_pearson_n5_three_degrees_of_freedom() -> None:
    # r = 6 / sqrt(10 * 6); t = 3/sqrt(2); for df = 3, p = 1 - (2/pi)(atan(u) + u / (1 + u^2)) with u = t / sqrt(3)
    r, p = pearson([1, 2, 3, 4, 5], [2, 4, 5, 4, 5])
    assert r == pytest.approx(6 / math.sqrt(60))
    u = math.sqrt(1.5)
    assert p == pytest.approx(1 - 2 / math.pi * (math.atan(u) + u / (1 + u * u)))


def test_pearson_constant_series_and_bad_input() -> None:
    r, p = pearson([1, 1, 1], [1, 2, 3])
    assert math.isnan(r) and math.isnan(p)
    with pytest.raises(ValueError):
        pearson([1, 2], [1, 2])
    with pytest.raises(ValueError):
        pearson([1, 2, 3], [1, 2])


def _traj(example_id: str, summaries: list[LogprobSummary | None]) -> Trajectory:
    traj = Trajectory(id=example_id, example=Example(id=example_id, fields={}))
    traj.add(Turn(role="user", kind="prompt", round=1, text="q"))
    for t, summary in enumerate(summaries, start=1):
        traj.add(Turn(role="assistant", kind="answer" if t == 1 else "correction", round=t, text="a",
                      logprobs=summary))
        traj.add(Turn(role="user", kind="prompt", round=t + 1, text="review"))
    return traj


def test_per_round_uncertainty() -> None:
    first = _traj("a", [LogprobSummary(2, -2.0, 0.5), LogprobSummary(4, -2.0)])
    second = _traj("b", [None, LogprobSummary(1, -3.0, 1.5), LogprobSummary(2, -1.0, 0.2)])
    silent = _traj("c", [None, None, None, None])
    rows = per_round_uncertainty([first, second, silent])
    assert rows == [
        {"round": 1, "mean_nll": 1.0, "mean_entropy": 0.5, "n": 1},
        {"round": 2, "mean_nll": 1.75, "mean_entropy": 1.5, "n": 2},  # (0.5 + 3) / 2; only b stored entropy
        {"round": 3, "mean_nll": 0.5, "mean_entropy": 0.2, "n": 1},  # a stopped after round 2: not carried
        {"round": 4, "mean_nll": None, "mean_entropy": None, "n": 0},
    ]
