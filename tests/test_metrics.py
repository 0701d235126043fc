"""Metrics by round: hand-computed accuracies, deltas, transitions and bootstrap intervals."""

from __future__ import annotations

import json

import pytest

from selfcorrect.analysis.metrics import (
    accuracy_by_round,
    answer_at,
    bootstrap_ci,
    correct_at,
    delta,
    delta_c_to_i,
    delta_i_to_c,
    format_table,
    summarize,
    transition_counts,
)
from selfcorrect.trajectory import Example, Trajectory, Turn, Verdict


def make_traj(example_id: str, outcomes: list[bool | None], suffix: str = "") -> Trajectory:
    """A question, then one model answer per outcome (True right, False wrong, None unscored), with a user review
    prompt between answers as a real multi-round run has."""
    traj = Trajectory(id=f"{example_id}{suffix}", example=Example(id=example_id, fields={"q": example_id}))
    traj.add(Turn(role="user", kind="prompt", round=1, text=f"question {example_id}"))
    for t, outcome in enumerate(outcomes, start=1):
        if t > 1:
            traj.add(Turn(role="user", kind="prompt", round=t, text="Review your previous answer."))
        verdict = None if outcome is None else Verdict(score=1.0 if outcome else 0.0)
        traj.add(Turn(role="assistant", kind="answer" if t == 1 else "correction", round=t, text=f"answer {t}",
                      verdict=verdict))
    return traj


@pytest.fixture
def four() -> list[Trajectory]:
    # e1 I->C, e2 I->C, e3 C->I, e4 C->C
    return [make_traj("e1", [False, True]), make_traj("e2", [False, True]),
            make_traj("e3", [True, False]), make_traj("e4", [True, True])]


def test_accuracy_and_deltas_on_four_examples(four: list[Trajectory]) -> None:
    assert accuracy_by_round(four) == [0.5, 0.75]
    assert delta(four) == pytest.approx(0.25)
    assert delta_i_to_c(four) == pytest.approx(0.5)
    assert delta_c_to_i(four) == pytest.approx(0.25)
    assert transition_counts(four) == {"I->C": 2, "C->C": 1, "C->I": 1, "I->I": 0}


def test_delta_with_rounds_reversed_is_negated(four: list[Trajectory]) -> None:
    assert delta(four, t1=2, t2=1) == pytest.approx(-0.25)
    assert delta_i_to_c(four, t1=2, t2=1) == pytest.approx(0.25)


def test_early_stopped_trajectory_carries_its_last_answer_forward() -> None:
    stopped = make_traj("s", [True])
    stopped.stopped = True
    running = make_traj("r", [False, True, False])
    assert answer_at(stopped, 3) is stopped.model_turns()[0]
    assert correct_at(stopped, 3)
    # round 1: s right, r wrong; round 2: both right; round 3: s right (carried), r wrong
    assert accuracy_by_round([stopped, running]) == [0.5, 1.0, 0.5]
    assert accuracy_by_round([stopped], rounds=2) == [1.0, 1.0]


def test_missing_or_unscored_answer_counts_as_wrong() -> None:
    empty = make_traj("x", [])
    unscored = make_traj("y", [None])
    assert answer_at(empty, 1) is None
    assert not correct_at(empty, 1)
    assert not correct_at(unscored, 1)
    assert accuracy_by_round([empty, unscored, make_traj("z", [True])]) == [pytest.approx(1 / 3)]


def test_fan_out_samples_weigh_like_one_example() -> None:
    trajs = [make_traj("A", [True, True], "/a0"), make_traj("A", [False, False], "/a1"),
             make_traj("B", [False, True])]
    # per example at t1: A = 0.5, B = 0 -> 0.25 (trajectory-weighted it would be 1/3)
    # per example at t2: A = 0.5, B = 1 -> 0.75
    assert accuracy_by_round(trajs) == [0.25, 0.75]
    assert delta(trajs) == pytest.approx(0.5)
    assert delta_i_to_c(trajs) == pytest.approx(0.5)  # A: 0 of 2 samples fixed, B: 1 of 1
    assert delta_c_to_i(trajs) == pytest.approx(0.0)
    assert transition_counts(trajs) == {"I->C": 1, "C->C": 1, "C->I": 0, "I->I": 1}


def test_round_zero_is_rejected(four: list[Trajectory]) -> None:
    with pytest.raises(ValueError):
        answer_at(four[0], 0)


def test_bootstrap_of_two_values_spans_both() -> None:
    # resample means of [0, 1] are 0, 0.5, 1 with probability 1/4, 1/2, 1/4: the 2.5% and 97.5% points are 0 and 1
    assert bootstrap_ci([0.0, 1.0]) == (0.0, 1.0)


def test_bootstrap_is_degenerate_when_all_examples_agree() -> None:
    assert bootstrap_ci([0.75] * 7) == (0.75, 0.75)
    assert bootstrap_ci([0.3]) == (0.3, 0.3)


def test_bootstrap_contains_estimate_and_is_seeded() -> None:
    values = [0, 1, 1, 0, 1, 1, 1, 0, 0.5, 1]
    lo, hi = bootstrap_ci(values, seed=3)
    assert lo < 0.65 < hi
    assert bootstrap_ci(values, seed=3) == (lo, hi)
    assert bootstrap_ci(values, seed=2) != (lo, hi)  # the seed, not a global state, decides the resamples


def test_bootstrap_rejects_no_examples() -> None:
    with pytest.raises(ValueError):
        bootstrap_ci([])


def test_summarize_block(four: list[Trajectory]) -> None:
    metrics = summarize(four, seed=0)
    assert [(r["round"], r["value"], r["n"]) for r in metrics["accuracy_by_round"]] == [(1, 0.5, 4), (2, 0.75, 4)]
    for row in metrics["accuracy_by_round"]:
        lo, hi = row["ci"]
        assert lo <= row["value"] <= hi
    assert metrics["delta"]["value"] == pytest.approx(0.25)
    assert metrics["delta_i_to_c"]["value"] == pytest.approx(0.5)
    assert metrics["delta_c_to_i"]["value"] == pytest.approx(0.25)
    assert metrics["transitions"] == [{"from": 1, "to": 2, "counts": {"I->C": 2, "C->C": 1, "C->I": 1, "I->I": 0},
                                       "i_to_c": 0.5, "c_to_i": 0.25}]
    assert (metrics["n_examples"], metrics["n_trajectories"]) == (4, 4)
    assert json.loads(json.dumps(metrics)) == metrics  # plain JSON types only: it is stored as summary.json


def test_summarize_is_deterministic_and_order_free(four: list[Trajectory]) -> None:
    assert summarize(four, seed=5) == summarize(list(reversed(four)), seed=5)


def test_delta_interval_is_paired() -> None:
    # every example keeps its verdict: accuracy intervals are wide, but each per-example difference is 0,
    # so a paired bootstrap gives exactly [0, 0] (an unpaired one would not)
    trajs = [make_traj(f"c{i}", [True, True]) for i in range(5)] + [make_traj(f"w{i}", [False, False])
                                                                      for i in range(5)]
    metrics = summarize(trajs)
    lo, hi = metrics["accuracy_by_round"][0]["ci"]
    assert lo < 0.5 < hi
    assert metrics["delta"] == {"value": 0.0, "ci": [0.0, 0.0]}


def test_summarize_single_round_has_no_deltas() -> None:
    metrics = summarize([make_traj("a", [True]), make_traj("b", [False])])
    assert metrics["accuracy_by_round"][0]["value"] == 0.5
    assert metrics["delta"] is None and metrics["delta_i_to_c"] is None and metrics["delta_c_to_i"] is None
    assert metrics["transitions"] == []


def test_summarize_three_rounds_lists_each_consecutive_pair() -> None:
    metrics = summarize([make_traj("a", [False, True, True]), make_traj("b", [True, False, True])])
    assert [(t["from"], t["to"]) for t in metrics["transitions"]] == [(1, 2), (2, 3)]
    assert metrics["transitions"][1]["counts"] == {"I->C": 1, "C->C": 1, "C->I": 0, "I->I": 0}
    assert metrics["transitions"][1]["i_to_c"] == 0.5


def test_summarize_of_nothing_is_empty() -> None:
    metrics = summarize([])
    assert metrics["accuracy_by_round"] == [] and metrics["delta"] is None
    assert (metrics["n_examples"], metrics["n_trajectories"]) == (0, 0)


def test_format_table() -> None:
    metrics = {"n_examples": 4, "n_trajectories": 6,
               "accuracy_by_round": [{"round": 1, "value": 0.5, "ci": [0.25, 0.75], "n": 4},
                                     {"round": 2, "value": 0.75, "ci": [0.5, 1.0], "n": 4}],
               "delta": {"value": 0.25, "ci": [-0.25, 0.5]},
               "delta_i_to_c": {"value": 0.5, "ci": [0.0, 1.0]},
               "delta_c_to_i": {"value": 0.25, "ci": [0.0, 0.5]}}
    assert format_table(metrics).splitlines() == [
        "examples 4, trajectories 6",
        "acc@t1          0.500  [0.250, 0.750]",
        "acc@t2          0.750  [0.500, 1.000]",
        "delta          +0.250  [-0.250, +0.500]",
        "delta_i_to_c    0.500  [0.000, 1.000]",
        "delta_c_to_i    0.250  [0.000, 0.500]",
    ]


def test_format_table_without_second_round() -> None:
    metrics = summarize([make_traj("a", [True])])
    assert format_table(metrics).splitlines() == ["examples 1, trajectories 1",
                                                  "acc@t1          1.000  [1.000, 1.000]"]
