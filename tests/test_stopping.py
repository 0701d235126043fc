"""Stop rules on hand-built trajectories, and in a run: stopped trajectories leave the next batches."""

from __future__ import annotations

import math

import pytest

from selfcorrect.backends.scripted import ScriptedBackend
from selfcorrect.methods.evaluate import EvalConfig, run_eval
from selfcorrect.methods.stopping import ORACLE_LABEL, StopRule, answer_change_rate, convergence_round, stop_summary
from selfcorrect.tasks import get_task
from selfcorrect.trajectory import Example, LogprobSummary, Trajectory, Turn, Verdict


def _traj(answers: list[tuple[str, bool]], nlls: list[float] | None = None, tid: str = "q") -> Trajectory:
    traj = Trajectory(id=tid, example=Example(id=tid, fields={}))
    for i, (text, correct) in enumerate(answers):
        traj.add(Turn(role="user", kind="prompt", round=i + 1, text="?"))
        logprobs = LogprobSummary(n_tokens=2, sum_logprob=-2 * nlls[i]) if nlls else None
        traj.add(Turn(role="assistant", kind="answer" if i == 0 else "correction", round=i + 1, text=text,
                      extracted=text, verdict=Verdict(float(correct), text), logprobs=logprobs))
    return traj


def test_fixed_never_stops_and_oracle_stops_on_a_correct_answer():
    wrong_then_right = _traj([("a", False), ("b", True)])
    assert StopRule("fixed").reason(wrong_then_right) is None
    assert StopRule("oracle").reason(_traj([("a", False)])) is None
    assert StopRule("oracle").reason(wrong_then_right) == "oracle: correct"
    assert StopRule("oracle").oracle and not StopRule("converged").oracle


def test_converged_needs_patience_unchanged_answers():
    rule = StopRule("converged", patience=2)
    assert rule.reason(_traj([("x", False), ("x", False)])) is None  # only one unchanged round so far
    assert rule.reason(_traj([("y", False), ("x", False), ("x", False)])) is None
    assert rule.reason(_traj([("x", False), (" X ", False), ("x", False)])).startswith("converged: answer")
    assert StopRule("converged").reason(_traj([("y", False), ("x", False)])) is None


def test_converged_on_nll_change_below_epsilon():
    rule = StopRule("converged", patience=1, nll_epsilon=0.1)
    assert rule.reason(_traj([("a", False), ("b", False)], nlls=[1.0, 1.05])).startswith("converged: mean NLL")
    assert rule.reason(_traj([("a", False), ("b", False)], nlls=[1.0, 1.2])) is None
    assert StopRule("converged").reason(_traj([("a", False), ("b", False)], nlls=[1.0, 1.0])) is None  # no ε


def test_apply_marks_the_stop_round_and_summary_counts_it():
    trajs = [_traj([("a", True)], tid="t0"), _traj([("a", False)], tid="t1")]
    assert StopRule("oracle").apply(trajs, 1) == 1
    assert trajs[0].stopped and trajs[0].metadata["stop_round"] == 1 and not trajs[1].stopped
    from selfcorrect.methods.stopping import finish

    finish(trajs, 3)
    assert trajs[1].stop_reason == "max_rounds" and trajs[1].metadata["stop_round"] == 3
    summary = stop_summary(trajs, StopRule("oracle"))
    assert summary["stop_round_histogram"] == {"1": 1, "3": 1}
    assert summary["mean_stop_round"] == 2.0 and summary["label"] == ORACLE_LABEL
    assert summary["reasons"] == {"max_rounds": 1, "oracle": 1}


def test_answer_change_rate_and_convergence_round():
    # 10 examples: rounds 1->2 fix 6 of them, then nothing changes (round 3 repeats round 2).
    trajs = [_traj([("w", False), ("r", True), ("r", True)], tid=f"q{i}") for i in range(6)]
    trajs += [_traj([("r", True), ("r", True), ("r", True)], tid=f"q{i}") for i in range(6, 10)]
    rates = answer_change_rate(trajs)
    assert rates == [{"round": 2, "changed": 0.6, "n": 10}, {"round": 3, "changed": 0.0, "n": 10}]
    result = convergence_round(trajs)
    assert result["round"] == 2  # acc 0.4 -> 1.0 -> 1.0: round 1 differs from later rounds, round 2 does not
    assert convergence_round(trajs[6:])["round"] == 1  # always right: converged from the start
    still_moving = [_traj([("w", False), ("w", False), ("r", True)], tid=f"q{i}") for i in range(10)]
    assert convergence_round(still_moving)["round"] is None  # only the last round "matches every later round"


def test_converged_run_sends_only_unfinished_trajectories(tmp_path):
    """Even examples answer the same twice (stop after round 2); odd ones keep changing until the last round."""
    options = {"n_digits": 4, "sizes": {"train": 4, "validation": 4, "test": 8}}
    task = get_task("sandbox-chain", **options)
    index = {ex.fields["question"]: i for i, ex in enumerate(task.examples("test"))}

    def respond(request, _sample):
        i = index[request.messages[0]["content"]]
        n_answers = sum(m["role"] == "assistant" for m in request.messages)
        return "11111111" if i % 2 == 0 else f"{n_answers}" * 8

    backend = ScriptedBackend(respond=respond)
    config = EvalConfig(task="sandbox-chain", task_options=options, backend="scripted", model=None, rounds=3,
                        stop="converged")
    summary = run_eval(config, tmp_path / "run", quiet=True, backend=backend)
    assert backend.calls == [8, 8, 4, 4]  # after round 2 the four even examples are done
    assert summary["stopping"]["stop_round_histogram"] == {"2": 4, "4": 4}
    assert summary["timings"]["backend_calls"] == 4
    assert math.isclose(summary["stopping"]["mean_stop_round"], 3.0)


def test_oracle_runs_say_so_in_the_summary(tmp_path):
    options = {"n_digits": 4, "sizes": {"train": 4, "validation": 4, "test": 4}}
    config = EvalConfig(task="sandbox-chain", task_options=options, backend="scripted", model=None, rounds=2,
                        stop="oracle")
    summary = run_eval(config, tmp_path / "run", quiet=True, backend=ScriptedBackend(default="00000000"))
    assert summary["stopping"]["label"] == ORACLE_LABEL and summary["stopping"]["rule"] == "oracle"


def test_bad_stop_rule_is_a_config_error():
    with pytest.raises(ValueError):
        StopRule("sometimes")
