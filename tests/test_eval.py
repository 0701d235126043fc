"""`eval` end to end on a scripted backend: one backend call per round, exact metrics, resume after a kill."""

import json
import math

import pytest

from selfcorrect.backends.scripted import ScriptedBackend
from selfcorrect.cli import main
from selfcorrect.methods.evaluate import EvalConfig, run_eval
from selfcorrect.tasks import get_task

TASK_OPTIONS = {"n_digits": 4, "sizes": {"train": 10, "validation": 10, "test": 40}}


def _script(task):
    """Even examples: right at once. Odd examples: wrong first, fixed by the review (except every 4th: stays wrong)."""
    gold = {ex.fields["question"]: (i, ex.gold) for i, ex in enumerate(task.examples("test"))}

    def respond(request, _sample):
        index, trace = gold[request.messages[0]["content"]]
        n_answers = sum(m["role"] == "assistant" for m in request.messages)
        if index % 2 == 0 or (n_answers >= 1 and index % 4 == 1):
            return trace
        return "0" * len(trace)

    return respond


def _config(**kw):
    return EvalConfig(**{"task": "sandbox-chain", "task_options": TASK_OPTIONS, "backend": "scripted", "rounds": 2,
                         "chunk_size": 16, **kw})


def test_eval_sends_one_call_per_round_per_chunk_and_scores_exactly(tmp_path):
    task = get_task("sandbox-chain", **TASK_OPTIONS)
    backend = ScriptedBackend(respond=_script(task))
    summary = run_eval(_config(), tmp_path / "run", quiet=True, backend=backend)
    assert backend.calls == [16, 16, 16, 16, 16, 16, 8, 8, 8]  # chunks of 16, 16, 8; three rounds each
    metrics = summary["metrics"]
    assert [r["value"] for r in metrics["accuracy_by_round"]] == [0.5, 0.75, 0.75]
    assert metrics["delta"]["value"] == pytest.approx(0.25)
    assert metrics["delta_i_to_c"]["value"] == pytest.approx(0.25)
    assert metrics["delta_c_to_i"]["value"] == 0.0
    assert summary["timings"]["backend_calls"] == 9
    saved = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert saved["metrics"] == metrics and "versions" in saved["environment"]
    lines = (tmp_path / "run" / "samples.jsonl").read_text().splitlines()
    first = json.loads(lines[0])
    assert [t["kind"] for t in first["turns"]] == ["prompt", "answer", "prompt", "correction", "prompt", "correction"]
    assert first["turns"][2]["template"] == "review"


def test_same_seed_gives_byte_identical_samples(tmp_path):
    task = get_task("sandbox-chain", **TASK_OPTIONS)
    run_eval(_config(), tmp_path / "a", quiet=True, backend=ScriptedBackend(respond=_script(task)))
    run_eval(_config(), tmp_path / "b", quiet=True, backend=ScriptedBackend(respond=_script(task)))
    assert (tmp_path / "a" / "samples.jsonl").read_bytes() == (tmp_path / "b" / "samples.jsonl").read_bytes()


class _Killed(RuntimeError):
    pass


def test_resume_after_a_kill_finishes_each_id_exactly_once(tmp_path):
    task = get_task("sandbox-chain", **TASK_OPTIONS)
    script = _script(task)
    uninterrupted = run_eval(_config(), tmp_path / "full", quiet=True, backend=ScriptedBackend(respond=script))

    calls = []

    def dies_in_second_chunk(request, sample):
        calls.append(1)
        if len(calls) > 16 * 3 + 20:
            raise _Killed
        return script(request, sample)

    with pytest.raises(_Killed):
        run_eval(_config(), tmp_path / "killed", quiet=True, backend=ScriptedBackend(respond=dies_in_second_chunk))
    written = (tmp_path / "killed" / "samples.jsonl").read_text().splitlines()
    assert len(written) == 16  # the first chunk survived the kill, nothing of the second
    backend = ScriptedBackend(respond=script)
    resumed = run_eval(_config(), tmp_path / "killed", resume=True, quiet=True, backend=backend)
    assert backend.calls == [16, 16, 16, 8, 8, 8]  # only the unfinished chunks are generated again
    ids = [json.loads(line)["id"] for line in (tmp_path / "killed" / "samples.jsonl").read_text().splitlines()]
    assert sorted(ids) == sorted({f"test-{i}" for i in range(40)}) and len(ids) == 40
    assert resumed["metrics"] == uninterrupted["metrics"]


def test_cli_bad_input_is_one_line_and_exit_2(tmp_path, capsys):
    assert main(["eval", "--out", str(tmp_path / "x"), "--task", "sandbox-chan", "--backend", "scripted"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "unknown task 'sandbox-chan'" in err and "did you mean 'sandbox-chain'" in err
    misspelt = "task_options.n_digitz=4"
    assert main(["eval", "--out", str(tmp_path / "z"), "--backend", "scripted", "--set", misspelt]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "task 'sandbox-chain' does not take option(s) n_digitz; it takes: n_digits" in err
    config = tmp_path / "c.yaml"
    config.write_text("rounds: 1\nrouns: 2\n")
    assert main(["eval", "--out", str(tmp_path / "y"), "--config", str(config)]) == 2
    assert "unknown config key 'rouns'" in capsys.readouterr().err
    (tmp_path / "z").mkdir()
    (tmp_path / "z" / "samples.jsonl").write_text("")
    assert main(["eval", "--out", str(tmp_path / "z"), "--backend", "scripted", "--task", "sandbox-chain"]) == 2
    assert "already exists; pass --resume" in capsys.readouterr().err


def test_cli_eval_runs_with_a_scripted_backend_and_prints_the_table(tmp_path, capsys):
    code = main(["eval", "--out", str(tmp_path / "run"), "--backend", "scripted", "--model", "", "--limit", "8",
                 "--set", "task_options.n_digits=4", "--set", "backend_options.default='00000000'", "--quiet"])
    assert code == 0
    out = capsys.readouterr().out
    assert "acc@t1" in out and "acc@t2" in out and str(tmp_path / "run") in out
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["metrics"]["accuracy_by_round"][0]["value"] == 0.0 and summary["lucky_hit_rate_t1"] is not None


def test_tasks_command_lists_every_task(capsys):
    assert main(["tasks"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert {line.split()[0] for line in out} >= {"sandbox-chain", "nq-open", "gsm8k", "bbq", "advbench", "jsonl"}


def test_extra_samples_ride_in_the_same_call_and_give_answer_entropy(tmp_path):
    """Sample 0 is the answer; extras 1 and 2 agree with it on even examples and differ on odd ones."""
    task = get_task("sandbox-chain", **TASK_OPTIONS)
    script = _script(task)

    def respond(request, sample):
        return script(request, 0) if sample < 2 else "1" * 8

    plain = ScriptedBackend(respond=_script(task))
    run_eval(_config(), tmp_path / "plain", quiet=True, backend=plain)
    backend = ScriptedBackend(respond=respond)
    summary = run_eval(_config(samples=2), tmp_path / "run", quiet=True, backend=backend)
    assert backend.calls == plain.calls  # the extra samples cost no extra calls
    main_lines = [json.loads(line) for line in (tmp_path / "run" / "samples.jsonl").read_text().splitlines()]
    plain_lines = [json.loads(line) for line in (tmp_path / "plain" / "samples.jsonl").read_text().splitlines()]
    assert [{**m, "metadata": {k: v for k, v in m["metadata"].items() if k != "samples"}} for m in main_lines] == \
        plain_lines  # the answers themselves are those of a run without samples
    assert main_lines[0]["metadata"]["samples"]["1"] == [main_lines[0]["turns"][1]["extracted"], "1" * 8]
    # every answer set is {a, a, "11111111"} with a != "11111111": entropy H(2/3, 1/3) in every round
    h = -(2 / 3 * math.log(2 / 3) + 1 / 3 * math.log(1 / 3))
    for row in summary["uncertainty"]["by_round"]:
        assert row["answer_entropy"] == pytest.approx(h) and row["samples_per_answer"] == 3
        assert row["answer_entropy_n"] == 40


def test_features_the_backend_lacks_are_refused_or_noted(tmp_path, capsys):
    code = main(["eval", "--out", str(tmp_path / "x"), "--backend", "scripted", "--model", "", "--limit", "2",
                 "--set", "task_options.n_digits=4", "--hidden-layer", "-1", "--quiet"])
    assert code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "backend 'scripted' gives no hidden states" in err
    assert not (tmp_path / "x").exists()  # no half-started run folder is left behind
    summary = run_eval(_config(), tmp_path / "run", quiet=True, backend=ScriptedBackend(default="0"))
    assert summary["uncertainty"]["option_confidence"] == "not a multiple-choice task"


def test_library_prompts_are_recorded_by_name(tmp_path):
    summary = run_eval(_config(review_prompt="review-confident"), tmp_path / "run", quiet=True,
                       backend=ScriptedBackend(default="0"))
    assert summary["prompts"]["review-confident"].startswith("Review your previous answer. If you are very")
    first = json.loads((tmp_path / "run" / "samples.jsonl").read_text().splitlines()[0])
    assert first["turns"][2]["template"] == "review-confident"
    assert "review_prompt: review-confident" in (tmp_path / "run" / "config.yaml").read_text()


def test_option_confidence_and_ece_by_hand():
    from selfcorrect.analysis.round_uncertainty import uncertainty_by_round
    from selfcorrect.trajectory import Example, Trajectory, Turn, Verdict

    def traj(nlls, gold):
        t = Trajectory(id=f"q{gold}{nlls}", example=Example(id=f"q{nlls}", fields={"options": ["x", "y", "z"]},
                                                            gold=gold))
        t.add(Turn(role="assistant", kind="answer", round=1, text="(a)", verdict=Verdict(1.0, "a")))
        t.metadata["option_nll"] = {"1": nlls}
        return t

    ln = math.log
    # confidences: [1, 1/2, 1/2]/2 -> 0.5 (a, right); [1/3, 1, 1/3]/(5/3) -> 0.6 (b, wrong); [1, 1/9, 1/9] -> 9/11
    trajs = [traj([0.0, ln(2), ln(2)], 0), traj([ln(3), 0.0, ln(3)], 0), traj([0.0, ln(9), ln(9)], 0)]
    option = uncertainty_by_round(trajs)[0]["option"]
    assert option["mean_confidence"] == pytest.approx((0.5 + 0.6 + 9 / 11) / 3)
    assert option["accuracy"] == pytest.approx(2 / 3)
    assert option["ece"] == pytest.approx((0.5 + 0.6 + (1 - 9 / 11)) / 3)
    assert sum(b["count"] for b in option["bins"]) == 3 and len(option["bins"]) == 10
    assert option["bins"][4]["count"] == 1 and option["bins"][8]["count"] == 1  # 0.5 in (0.4, 0.5]; 0.82 in (0.8, 0.9]


def test_five_round_run_with_samples_and_stopping_resumes_to_identical_results(tmp_path):
    """The docs' configuration (5 rounds, extra samples, a stop rule) killed mid-run and resumed: every line of
    samples.jsonl and the whole summary (timings aside) equal those of an uninterrupted run."""
    task = get_task("sandbox-chain", **TASK_OPTIONS)
    script = _script(task)

    def respond(request, sample):
        return script(request, 0) if sample == 0 else str(sample) * 8

    config = _config(rounds=4, samples=2, stop="converged", temperature=1.0)
    full = run_eval(config, tmp_path / "full", quiet=True, backend=ScriptedBackend(respond=respond))
    calls = []

    def dies(request, sample):
        calls.append(1)
        if len(calls) > 150:  # inside the second chunk's rounds
            raise _Killed
        return respond(request, sample)

    with pytest.raises(_Killed):
        run_eval(config, tmp_path / "killed", quiet=True, backend=ScriptedBackend(respond=dies))
    assert len((tmp_path / "killed" / "samples.jsonl").read_text().splitlines()) == 16  # only chunk 1 survived
    resumed = run_eval(config, tmp_path / "killed", resume=True, quiet=True, backend=ScriptedBackend(respond=respond))
    lines = sorted((tmp_path / "killed" / "samples.jsonl").read_text().splitlines())
    assert lines == sorted((tmp_path / "full" / "samples.jsonl").read_text().splitlines())
    assert {k: v for k, v in resumed.items() if k != "timings"} == {k: v for k, v in full.items() if k != "timings"}


def test_an_option_the_backend_does_not_take_is_one_line(tmp_path, capsys):
    assert main(["eval", "--out", str(tmp_path / "x"), "--backend", "scripted", "--limit", "2",
                 "--set", "backend_options.tensor_parallel_size=2"]) == 2
    err = capsys.readouterr().err
    assert "backend 'scripted' does not take option(s) tensor_parallel_size" in err and err.count("\n") == 1
