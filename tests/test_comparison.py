"""`selfcorrect report RUN RUN ... --out PAGE`: real run folders of eval, STaSC and InSeC side by side, with the
rows read from their own summaries and transcripts picked by flip."""

from __future__ import annotations

import json

import pytest

from selfcorrect.backends.scripted import ScriptedBackend
from selfcorrect.cli import main
from selfcorrect.comparison import build_comparison, flip_of, rows_of, transcripts
from selfcorrect.methods.evaluate import EvalConfig, run_eval
from selfcorrect.tasks import get_task

BBQ_LIMIT = 12


def _bbq_run(out, rounds: int, fixes: int):
    """A scripted BBQ eval: every first answer is (a); the review fixes the first `fixes` questions and keeps the
    rest as they were, so the flips are known in advance."""
    task = get_task("bbq")
    examples = task.examples("test", BBQ_LIMIT)

    def respond(request, _sample):
        index = next(i for i, ex in enumerate(examples) if task.question(ex) in request.messages[0]["content"])
        if len(request.messages) > 1 and index < fixes:
            return f"The answer is ({'abc'[examples[index].gold]})."
        return "The answer is (a)."

    config = EvalConfig(task="bbq", backend="scripted", model=None, rounds=rounds, limit=BBQ_LIMIT,
                        question_prompt="bbq-question")
    run_eval(config, out, quiet=True, backend=ScriptedBackend(respond=respond))
    return examples


@pytest.fixture(scope="module")
def bbq_runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("bbq-runs")
    examples = _bbq_run(root / "review", rounds=2, fixes=6)
    _bbq_run(root / "no-review", rounds=0, fixes=0)
    return root, examples


def test_eval_rows_are_the_runs_own_summaries(bbq_runs):
    root, examples = bbq_runs
    (review,) = rows_of(root / "review")
    summary = json.loads((root / "review" / "summary.json").read_text())
    assert review.method == "intrinsic (2 rounds)" and review.task == "bbq" and review.n_examples == BBQ_LIMIT
    assert review.first == summary["metrics"]["accuracy_by_round"][0]
    assert review.second == summary["metrics"]["accuracy_by_round"][1] and review.delta == summary["metrics"]["delta"]
    wrong_first = [ex for ex in examples if ex.gold != 0]
    assert review.i_to_c["value"] == pytest.approx(sum(ex.gold != 0 for ex in examples[:6]) / BBQ_LIMIT)
    assert review.first["value"] == pytest.approx(1 - len(wrong_first) / BBQ_LIMIT)
    (baseline,) = rows_of(root / "no-review")
    assert baseline.method == "no review" and baseline.second is None and baseline.delta is None


def test_transcripts_are_picked_by_flip_in_id_order(bbq_runs):
    root, examples = bbq_runs
    chosen = transcripts(root / "review" / "samples.jsonl", per_flip=2)
    fixed = sorted(ex.id for ex in examples[:6] if ex.gold != 0)
    still_wrong = sorted(ex.id for ex in examples[6:] if ex.gold != 0)
    assert [t.example.id for t in chosen["I->C"]] == fixed[:2]
    assert [t.example.id for t in chosen["I->I"]] == still_wrong[:2]
    assert chosen["C->I"] == []  # the script never breaks a right answer
    assert all(flip_of(t) == "I->C" for t in chosen["I->C"])


def _ci_text(estimate: dict) -> str:
    return f"{estimate['value']:.3f} [{estimate['ci'][0]:.3f}, {estimate['ci'][1]:.3f}]"


def test_the_page_holds_the_table_the_bias_scores_and_the_transcripts(bbq_runs, tmp_path, capsys):
    root, examples = bbq_runs
    page_path = tmp_path / "compare.html"
    assert main(["report", str(root / "no-review"), str(root / "review"), "--out", str(page_path)]) == 0
    page = page_path.read_text()
    review = rows_of(root / "review")[0]
    assert _ci_text(review.second) in page
    assert page.index("no review") < page.index("intrinsic (2 rounds)")  # rows in the order the runs were given
    assert page.count("data:image/png;base64,") == 2  # the methods plot and the rounds plot
    assert "ambiguous bias" in page and "I->C: 2 examples" in page
    first_fixed = min((ex for ex in examples[:6] if ex.gold != 0), key=lambda ex: ex.id)
    assert f"The answer is ({'abc'[first_fixed.gold]})." in page  # the model's own words, not only counts
    assert not list(tmp_path.glob("*.tmp*"))
    printed = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| ")]
    assert printed[0].startswith("| method | task") and len(printed) == 3  # the same table, as markdown
    assert printed[2].startswith("| intrinsic (2 rounds) |") and _ci_text(review.second) in printed[2]


def test_a_stasc_and_an_insec_run_become_rows_of_their_test_evaluations(sandbox_dir, tmp_path):
    from selfcorrect.methods.insec import InSeCConfig, run_insec
    from selfcorrect.methods.stasc import STaSCConfig, run_stasc
    from selfcorrect.training.finetune import FinetuneConfig

    options = {"n_digits": 4, "sizes": {"train": 8, "validation": 4, "test": 4}}
    finetune = FinetuneConfig(batch_size=8, epochs=1, learning_rate=1e-3)
    stasc = run_stasc(STaSCConfig(model=str(sandbox_dir), variant="ENE", iterations=1, n_init=1, n_corr=2,
                                  task_options=options, eval_temperatures=[1.0], finetune=finetune),
                      tmp_path / "stasc", quiet=True)
    (row,) = rows_of(tmp_path / "stasc")
    chosen = stasc["selection"]["iteration"]
    assert row.method == f"STaSC ENE, iteration {chosen}, T=1"
    assert row.first == stasc["iterations"][chosen]["eval"]["test@T1"]["accuracy_by_round"][0]
    assert row.trajectories.is_file() and row.model == str(sandbox_dir)
    insec = run_insec(InSeCConfig(model=str(sandbox_dir), iterations=1, samples_per_question=2, eval_limit=4,
                                  task_options=options, finetune=finetune), tmp_path / "insec", quiet=True)
    (marker,) = rows_of(tmp_path / "insec")
    assert marker.first == insec["final"]["first_attempt_accuracy"] and marker.second == insec["final"]["accuracy"]
    assert marker.i_to_c == insec["final"]["i_to_c"] and marker.trajectories.is_file()
    assert marker.model == str(sandbox_dir)  # the model trained, not the trained copy's folder
    page = build_comparison([tmp_path / "stasc", tmp_path / "insec"], tmp_path / "page.html").read_text()
    assert "STaSC ENE" in page and "InSeC (on_policy negatives)" in page


def test_a_run_that_is_not_finished_is_one_error(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert main(["report", str(tmp_path / "empty"), str(tmp_path / "empty"), "--out", str(tmp_path / "p.html")]) == 2
    assert "has no summary.json" in capsys.readouterr().err
    assert not (tmp_path / "p.html").exists()


def test_a_stasc_run_that_selected_no_iteration_says_why_and_is_one_error_in_a_report(sandbox_dir, tmp_path,
                                                                                      capsys):
    """select_temperature 1 (the default) with only greedy evaluations: nothing to select on. The run says so
    (not "selected iteration (on None): None"), and a report names the file, the field and the reason."""
    run = tmp_path / "stasc"
    assert main(["stasc", "--out", str(run), "--model", str(sandbox_dir), "--iterations", "1", "--n-init", "1",
                 "--n-corr", "1", "--quiet", "--set", "task_options.n_digits=4", "--set",
                 "task_options.sizes={train: 4, validation: 2, test: 2}", "--set", "eval_temperatures=[0]"]) == 0
    assert "no iteration selected: no validation@T1 evaluation to select on" in capsys.readouterr().out
    assert main(["report", str(run), "--out", str(tmp_path / "page.html")]) == 2
    err = capsys.readouterr().err
    assert "summary.json: field 'selection': no validation@T1 evaluation to select on" in err
    assert not (tmp_path / "page.html").exists()
