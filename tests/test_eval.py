"""`eval` end to end on a scripted backend: one backend call per round, exact metrics, resume after a kill."""

import json

import pytest

from selfcorrect.backends.scripted import ScriptedBackend
from selfcorrect.cli import main
from selfcorrect.methods.intrinsic import EvalConfig, run_eval
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
    return EvalConfig(task="sandbox-chain", task_options=TASK_OPTIONS, backend="scripted", rounds=2, chunk_size=16,
                      **kw)


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
