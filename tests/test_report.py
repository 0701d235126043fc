"""`selfcorrect report`: figures and one self-contained page from a run folder alone (no model is loaded)."""

from __future__ import annotations

import json

from selfcorrect.backends.scripted import ScriptedBackend
from selfcorrect.cli import main
from selfcorrect.methods.evaluate import EvalConfig, run_eval
from selfcorrect.tasks import get_task


def test_report_draws_every_figure_from_saved_results(tmp_path, capsys):
    options = {"n_digits": 4, "sizes": {"train": 4, "validation": 4, "test": 10}}
    task = get_task("sandbox-chain", **options)
    gold = {ex.fields["question"]: (i, ex.gold) for i, ex in enumerate(task.examples("test"))}

    def respond(request, _sample):  # examples 0..4 fixed in round 2; the rest right from the start
        i, trace = gold[request.messages[0]["content"]]
        return trace if i >= 5 or len(request.messages) > 2 else "0" * 8

    config = EvalConfig(task="sandbox-chain", task_options=options, backend="scripted", model=None, rounds=2,
                        stop="converged")
    run_eval(config, tmp_path / "run", quiet=True, backend=ScriptedBackend(respond=respond))
    probe = {"concept": "answer-in-context-is-wrong", "layer": -1, "trained_on": "half",
             "held_out_auroc": {"value": 0.8, "ci": [0.7, 0.9], "n_examples": 5},
             "question_only_auroc": {"value": 0.75, "ci": [0.6, 0.85]},
             "activation_by_round": [{"round": r, "mean_score": 0.5 / r, "mean_cosine": 0.1} for r in (1, 2, 3)]}
    (tmp_path / "run" / "probe.json").write_text(json.dumps(probe))
    assert main(["report", str(tmp_path / "run")]) == 0
    folder = tmp_path / "run" / "report"
    assert sorted(p.name for p in folder.glob("*.png")) == ["accuracy.png", "concept.png", "flips.png",
                                                            "stop_rounds.png", "uncertainty.png"]
    page = (folder / "index.html").read_text()
    assert page.count("data:image/png;base64,") == 5 and "<img" in page and "src='report/" not in page
    assert "0.500 [" in page and "1.000 [" in page  # accuracy at rounds 1 and 2 in the table
    assert "convergence round: <b>2</b>" in page and "probe held-out AUROC 0.800 [0.700, 0.900]" in page
    assert "the question alone (round-1 states): AUROC 0.750 [0.600, 0.850]" in page


def test_report_needs_a_finished_run(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert main(["report", str(tmp_path / "empty")]) == 2
    assert "has no summary.json" in capsys.readouterr().err
