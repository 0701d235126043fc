"""`selfcorrect report RUN RUN ... --out PAGE.html`: several runs side by side, method against method, in one page.

A researcher comparing methods wants one table with the same columns for every method (acc@t1, acc@t2, their
difference and the flips, each with its 95% interval), the accuracy curves over rounds on one plot, and the model's
own words behind the counts. Everything is read from run folders (summary.json, config.yaml and the saved
trajectories), never from a model, so the page can be rebuilt wherever the folders are copied.

How each kind of run becomes rows:
- an `eval` run (any method: no review with `--rounds 0`, intrinsic review, cac): one row, from its summary;
- a `stasc` run: one row per test evaluation of the iteration chosen on validation (its evaluations are ordinary
  eval run folders, `iter-N/eval-<split>-T<temperature>`);
- an `insec` run: one row from its final evaluation, where acc@t1 is the first attempt (the text before the first
  correction marker) and acc@t2 the final answer.
Transcripts are shown per flip between the first and the second answer: I->C (wrong to right), C->I (right to
wrong) and I->I (wrong both times), the first few examples of each in id order.
"""

from __future__ import annotations

import base64
import html
import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from selfcorrect.analysis.metrics import correct_at
from selfcorrect.errors import SelfCorrectError
from selfcorrect.runs import SAMPLES_FILE, RunFolder, read_saved_config, read_trajectories
from selfcorrect.tasks import task_class
from selfcorrect.trajectory import Trajectory

#: The flips a reader wants to see transcripts of, in the order the page shows them.
SHOWN_FLIPS = ("I->C", "C->I", "I->I")
#: Characters of one turn shown in a transcript; the rest is cut with a note.
TURN_CHARS = 700


@dataclass
class Row:
    """One line of the method-against-method table, with what the page needs to draw and quote it."""

    run: Path
    method: str
    task: str
    model: str
    seed: int
    n_examples: int
    first: dict[str, Any] | None  # acc@t1 estimate {value, ci}
    second: dict[str, Any] | None  # acc@t2 estimate
    delta: dict[str, Any] | None  # acc@t2 - acc@t1, paired
    i_to_c: dict[str, Any] | None
    c_to_i: dict[str, Any] | None
    by_round: list[dict[str, Any]] = field(default_factory=list)  # accuracy_by_round, eval-like rows only
    application: dict[str, Any] | None = None
    trajectories: Path | None = None  # where the transcripts come from

    @property
    def label(self) -> str:
        return f"{self.method} ({self.run.name})"


def _eval_row(run: Path, summary: dict[str, Any], method: str, model: str, folder: Path) -> Row:
    metrics = summary["metrics"]
    rounds = metrics["accuracy_by_round"]
    return Row(run=run, method=method, task=summary["task"]["name"], model=model, seed=summary["seed"],
               n_examples=metrics["n_examples"], first=rounds[0], second=rounds[1] if len(rounds) > 1 else None,
               delta=metrics["delta"], i_to_c=metrics["delta_i_to_c"], c_to_i=metrics["delta_c_to_i"],
               by_round=rounds, application=summary.get("application"), trajectories=folder / SAMPLES_FILE)


def _eval_method(summary: dict[str, Any]) -> str:
    rounds = len(summary["metrics"]["accuracy_by_round"]) - 1
    return "no review" if rounds == 0 else f"{summary['method']} ({rounds} round{'s' * (rounds > 1)})"


def _stasc_rows(run: Path, summary: dict[str, Any]) -> list[Row]:
    if "iteration" not in summary["selection"]:
        raise SelfCorrectError(f"{run / 'summary.json'}: field 'selection': {summary['selection'].get('note')}, so "
                               "there is no iteration to compare")
    chosen = summary["selection"]["iteration"]
    config = read_saved_config(run)
    name = "STaSC " + summary["variant"] if summary["method"] == "stasc" else summary["method"].upper()
    rows = []
    for where in summary["iterations"][chosen]["eval"]:
        split, temperature = where.split("@T")
        if split != "test":
            continue
        # an iteration that kept no pairs repeats the previous one's evaluation: quote the folder that ran it
        done = [n for n in range(chosen, -1, -1) if (run / f"iter-{n}" / f"eval-{split}-T{temperature}").is_dir()]
        folder = run / f"iter-{done[0]}" / f"eval-{split}-T{temperature}"
        evaluated = RunFolder(folder).read_summary()
        rows.append(_eval_row(run, dict(evaluated), f"{name}, iteration {chosen}, T={temperature}",
                              str(config.get("model")), folder))
    return rows


def _insec_row(run: Path, summary: dict[str, Any]) -> Row:
    final = summary["final"]
    last = summary["iterations"][-1]["iteration"]
    negatives = summary["negatives"]
    method = "SFT (InSeC without negatives)" if negatives == "none" else f"InSeC ({negatives} negatives)"
    return Row(run=run, method=f"{method}, iteration {last}", task=summary["task"]["name"],
               model=str(read_saved_config(run).get("model")), seed=summary["seed"],
               n_examples=final["n_examples"], first=final["first_attempt_accuracy"], second=final["accuracy"],
               delta=None, i_to_c=final["i_to_c"], c_to_i=final["c_to_i"],
               trajectories=run / f"iter-{last}" / "eval.jsonl")


def rows_of(run: str | Path) -> list[Row]:
    """The table rows of one finished run folder of any command (one line and exit 2 for anything else)."""
    run = Path(run)
    summary = dict(RunFolder(run).read_summary())
    command = summary.get("command")
    if command == "eval":
        return [_eval_row(run, summary, _eval_method(summary), summary["model"], run)]
    if command == "stasc":
        return _stasc_rows(run, summary)
    if command == "insec":
        return [_insec_row(run, summary)]
    raise SelfCorrectError(f"{run / 'summary.json'}: field 'command': cannot compare runs of {command!r}")


def flip_of(trajectory: Trajectory) -> str:
    """I->C, C->I, C->C or I->I between the first and the second answer (InSeC: first attempt and final answer)."""
    insec = trajectory.metadata.get("insec")
    if insec is not None:
        first, second = insec["first_ok"], trajectory.last_answer.verdict.correct
    else:
        first, second = correct_at(trajectory, 1), correct_at(trajectory, 2)
    return f"{'C' if first else 'I'}->{'C' if second else 'I'}"


def transcripts(path: Path, per_flip: int) -> dict[str, list[Trajectory]]:
    """The first `per_flip` trajectories (in example-id order) of each flip in SHOWN_FLIPS."""
    if not path.is_file():
        return {}
    chosen: dict[str, list[Trajectory]] = {flip: [] for flip in SHOWN_FLIPS}
    for trajectory in sorted(read_trajectories(path), key=lambda t: (t.example.id, t.id)):
        bucket = chosen.get(flip_of(trajectory))
        if bucket is not None and len(bucket) < per_flip:
            bucket.append(trajectory)
    return chosen


def _cell(estimate: dict[str, Any] | None, signed: bool = False) -> str:
    if estimate is None or estimate.get("value") is None:
        return "–"
    value = f"{estimate['value']:+.3f}" if signed else f"{estimate['value']:.3f}"
    ci = estimate.get("ci")
    return value if not ci else f"{value} [{ci[0]:.3f}, {ci[1]:.3f}]"


TABLE_HEAD = ("method", "task", "model", "seed", "n", "acc@t1 [95% CI]", "acc@t2 [95% CI]", "Δ t2 − t1 [95% CI]",
              "I->C", "C->I", "run")


def _cells(row: Row) -> list[str]:
    return [row.method, row.task, Path(row.model).name, str(row.seed), str(row.n_examples), _cell(row.first),
            _cell(row.second), _cell(row.delta, signed=True), _cell(row.i_to_c), _cell(row.c_to_i), str(row.run)]


def comparison_table(rows: list[Row]) -> str:
    """The method-against-method table as HTML."""
    body = ["<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in _cells(row)) + "</tr>" for row in rows]
    return "<table><tr>" + "".join(f"<th>{h}</th>" for h in TABLE_HEAD) + "</tr>" + "".join(body) + "</table>"


def comparison_markdown(runs: list[str | Path]) -> str:
    """The same table as markdown, for the terminal and for docs that quote it."""
    lines = ["| " + " | ".join(TABLE_HEAD) + " |", "|" + "---|" * len(TABLE_HEAD)]
    lines += ["| " + " | ".join(_cells(row)) + " |" for run in runs for row in rows_of(run)]
    return "\n".join(lines)


def _png(fig: Any) -> str:
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buffer, format="png")
    plt.close(fig)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def plot_rounds(rows: list[Row]) -> str | None:
    """Accuracy by round with 95% intervals, one line per eval-like row."""
    import matplotlib.pyplot as plt

    drawn = [row for row in rows if row.by_round]
    if not drawn:
        return None
    fig, ax = plt.subplots(figsize=(7, 4), dpi=110)
    for i, row in enumerate(drawn):
        shift = (i - (len(drawn) - 1) / 2) * 0.04  # side by side, so overlapping intervals stay readable
        xs = [r["round"] + shift for r in row.by_round]
        values = [r["value"] for r in row.by_round]
        errors = [[v - r["ci"][0] for v, r in zip(values, row.by_round, strict=True)],
                  [r["ci"][1] - v for v, r in zip(values, row.by_round, strict=True)]]
        ax.errorbar(xs, values, yerr=errors, marker="o", capsize=3, label=row.label)
    ax.set(xlabel="round (answer t)", ylabel="accuracy", title="Accuracy by round (95% bootstrap CI)",
           xticks=sorted({r["round"] for row in drawn for r in row.by_round}))
    ax.legend(fontsize="small")
    return _png(fig)


def plot_methods(rows: list[Row]) -> str:
    """acc@t1 and acc@t2 per row, with their intervals: the table as a picture."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 0.5 * len(rows) + 1.5), dpi=110)
    for offset, attr, name in ((-0.15, "first", "acc@t1"), (0.15, "second", "acc@t2")):
        for y, row in enumerate(rows):
            estimate = getattr(row, attr)
            if estimate is None:
                continue
            lo, hi = estimate["ci"]
            ax.errorbar(estimate["value"], y + offset, xerr=[[estimate["value"] - lo], [hi - estimate["value"]]],
                        fmt="o" if attr == "first" else "s", capsize=3, color=f"C{0 if attr == 'first' else 1}",
                        label=name if y == 0 else None)
    ax.set_yticks(range(len(rows)), [row.label for row in rows], fontsize="small")
    ax.invert_yaxis()
    ax.set(xlabel="accuracy", title="Method against method (95% bootstrap CI)")
    ax.legend(fontsize="small")
    return _png(fig)


def _bias_table(application: dict[str, Any]) -> str:
    head = ["round", "ambiguous acc", "ambiguous bias", "disambiguated acc", "disambiguated bias"]
    body = []
    for row in application["by_round"]:
        cells = [str(row["round"])]
        for condition in ("ambig", "disambig"):
            block = row[condition]
            score = block["bias"]["score"]
            cells += [_cell(block["accuracy"]), "–" if score is None else f"{score:+.3f}"]
        body.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    return "<table><tr>" + "".join(f"<th>{h}</th>" for h in head) + "</tr>" + "".join(body) + "</table>"


def _transcript(trajectory: Trajectory) -> str:
    parts = [f"<p><b>{html.escape(trajectory.example.id)}</b> (gold: {html.escape(str(trajectory.example.gold))})"
             "</p>"]
    for turn in trajectory.turns:
        text = turn.text if len(turn.text) <= TURN_CHARS else turn.text[:TURN_CHARS] + " […]"
        mark = "" if turn.verdict is None else (" ✓" if turn.verdict.correct else " ✗")
        parts.append(f"<div class='{turn.role}'><i>{turn.role}{mark}</i><pre>{html.escape(text)}</pre></div>")
    return "<div class='transcript'>" + "".join(parts) + "</div>"


def _run_section(row: Row, per_flip: int) -> str:
    parts = [f"<h2>{html.escape(row.label)}</h2>"]
    if row.application and task_class(row.task).measures == "bias":
        parts.append("<p>BBQ accuracy and bias score by context (Parrish et al. 2022; +1 always with the stereotype, "
                     "−1 always against it)</p>" + _bias_table(row.application))
    chosen = transcripts(row.trajectories, per_flip) if row.trajectories else {}
    for flip, items in chosen.items():
        if items:
            parts.append(f"<h3>{flip}: {len(items)} example{'s' * (len(items) > 1)}</h3>")
            parts += [_transcript(t) for t in items]
    return "\n".join(parts)


STYLE = ("body{font-family:sans-serif;max-width:1200px;margin:auto}td,th{padding:2px 8px;border-bottom:1px solid "
         "#ddd;font-size:small}pre{white-space:pre-wrap;margin:2px 0 6px 12px}.transcript{border-left:3px solid "
         "#ccc;padding-left:8px;margin:8px 0}.assistant pre{color:#114}img{max-width:100%}")


def build_comparison(runs: list[str | Path], out: str | Path, per_flip: int = 2) -> Path:
    """Write the comparison page of `runs` to `out` (atomically); returns its path."""
    import matplotlib

    matplotlib.use("Agg")  # files only, never a window
    from selfcorrect.runs import atomic_write_text

    rows = [row for run in runs for row in rows_of(run)]
    if not rows:
        raise SelfCorrectError("report: the runs hold no test evaluation to compare")
    images = [image for image in (plot_methods(rows), plot_rounds(rows)) if image]
    page = ["<!doctype html><html><head><meta charset='utf-8'><title>selfcorrect: method against method</title>",
            f"<style>{STYLE}</style></head><body><h1>Method against method</h1>",
            "<p>Every interval is a 95% percentile bootstrap over examples; Δ is paired. Flips are shares of all "
            "examples: I->C wrong then right, C->I right then wrong.</p>",
            comparison_table(rows), *[f"<img alt='figure' src='data:image/png;base64,{data}'>" for data in images],
            *[_run_section(row, per_flip) for row in rows], "</body></html>"]
    out = Path(out)
    atomic_write_text(out, "\n".join(page) + "\n")
    return out
