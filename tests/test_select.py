"""`selfcorrect select`: scores by hand, one backend call for the whole corpus, the same records written back."""

from __future__ import annotations

import json
import math

import pytest

from selfcorrect.backends.scripted import ScriptedBackend
from selfcorrect.cli import main
from selfcorrect.select import SelectConfig, choose, run_select, uncertainty_scores
from selfcorrect.trajectory import Example, LogprobSummary, Trajectory, Turn

ANSWERS = {0: ["yes", "yes", "yes"], 1: ["yes", "no", "Yes"], 2: ["no", "no", "no"], 3: ["a", "a", "b"],
           4: ["x", " x", "X"], 5: ["a", "b", "c"]}


def _corpus(path):
    records = [{"question": f"q{i}", "id": i, "extra": {"nested": [i]}} for i in range(6)]
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return records


def _backend():
    return ScriptedBackend(respond=lambda request, k: ANSWERS[int(request.messages[0]["content"][1:])][k])


def test_select_keeps_the_most_uncertain_records_in_one_call(tmp_path):
    records = _corpus(tmp_path / "corpus.jsonl")
    backend = _backend()
    config = SelectConfig(corpus=str(tmp_path / "corpus.jsonl"), backend="scripted", model=None, samples=3, keep=2)
    report = run_select(config, tmp_path / "most.jsonl", backend=backend, quiet=True)
    assert backend.calls == [6]
    h = -(2 / 3 * math.log(2 / 3) + 1 / 3 * math.log(1 / 3))
    assert report["scores"] == pytest.approx([0.0, h, 0.0, h, 0.0, math.log(3)])
    assert report["kept"] == [1, 5]  # ln 3, then the first of the two ties
    written = [json.loads(line) for line in (tmp_path / "most.jsonl").read_text().splitlines()]
    assert written == [records[1], records[5]]
    assert json.loads((tmp_path / "most.jsonl.scores.json").read_text())["n_kept"] == 2


def test_select_least_uncertain_by_fraction_through_the_cli(tmp_path, capsys):
    _corpus(tmp_path / "corpus.jsonl")
    code = main(["select", "--corpus", str(tmp_path / "corpus.jsonl"), "--out", str(tmp_path / "least.jsonl"),
                 "--backend", "scripted", "--model", "", "--keep", "0.5", "--which", "least", "--quiet",
                 "--set", "backend_options.default=same"])
    assert code == 0, capsys.readouterr().err
    assert [json.loads(x)["id"] for x in (tmp_path / "least.jsonl").read_text().splitlines()] == [0, 1, 2]
    assert "kept 3 of 6 records" in capsys.readouterr().out
    assert main(["select", "--corpus", str(tmp_path / "corpus.jsonl"), "--out", str(tmp_path / "least.jsonl"),
                 "--backend", "scripted", "--model", ""]) == 2
    assert "already exists" in capsys.readouterr().err


def test_mean_nll_measure_and_choose():
    def sample(nll):
        traj = Trajectory(id="s", example=Example(id="r", fields={}))
        traj.add(Turn(role="assistant", kind="answer", round=1, text="t",
                      logprobs=LogprobSummary(n_tokens=4, sum_logprob=-4 * nll)))
        return traj

    scores = uncertainty_scores({"r0": [sample(1.0), sample(2.0)], "r1": [sample(0.5)]}, "mean_nll")
    assert scores == {"r0": pytest.approx(1.5), "r1": pytest.approx(0.5)}
    assert choose([3.0, 1.0, 2.0, 1.0], keep=2, which="least") == [1, 3]
    assert choose([3.0, 1.0, 2.0, 1.0], keep=0.25, which="most") == [0]
