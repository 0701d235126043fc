"""`selfcorrect report RUN_DIR`: PNG figures and one self-contained HTML page, from the run folder alone.

It reads `summary.json` (and `probe.json` when `selfcorrect probe` has been run), never a model, so a report can
be rebuilt anywhere the folder is copied. Figures, one function each: accuracy by round with 95% intervals,
I->C / C->I flips (wrong to right, right to wrong) by round, uncertainty by round, concept activation by round
(probe), and the stop-round histogram. They are written to `RUN_DIR/report/*.png`, and `RUN_DIR/report/index.html`
embeds them as base64 next to the per-round table.
"""

from __future__ import annotations

import base64
import html
from collections.abc import Callable
from pathlib import Path
from typing import Any

from selfcorrect.analysis.metrics import FLIP_LABELS
from selfcorrect.runs import RunFolder, read_json

REPORT_DIR = "report"


def load_results(run_dir: str | Path) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """(summary, probe or None) of a run folder; one line and exit 2 when the run has no summary yet."""
    run = Path(run_dir)
    summary = RunFolder(run).read_summary()
    probe_file = run / "probe.json"
    probe = read_json(probe_file) if probe_file.is_file() else None
    return dict(summary), probe


def _figure() -> tuple[Any, Any]:
    import matplotlib.pyplot as plt

    return plt.subplots(figsize=(5.5, 3.6), dpi=110)


def plot_accuracy(summary: dict[str, Any], _probe: Any) -> Any:
    rows = summary["metrics"]["accuracy_by_round"]
    fig, ax = _figure()
    rounds = [r["round"] for r in rows]
    values = [r["value"] for r in rows]
    errors = [[v - r["ci"][0] for v, r in zip(values, rows, strict=True)],
              [r["ci"][1] - v for v, r in zip(values, rows, strict=True)]]
    ax.errorbar(rounds, values, yerr=errors, marker="o", capsize=4)
    ax.set(xlabel="round", ylabel="accuracy", title="Accuracy by round (95% bootstrap CI)", xticks=rounds)
    return fig


def plot_flips(summary: dict[str, Any], _probe: Any) -> Any:
    blocks = summary["metrics"]["transitions"]
    if not blocks:
        return None
    fig, ax = _figure()
    labels = [f"{b['from']}→{b['to']}" for b in blocks]
    xs = range(len(blocks))
    ax.bar([x - 0.2 for x in xs], [b["i_to_c"] for b in blocks], width=0.4, label=FLIP_LABELS["i_to_c"])
    ax.bar([x + 0.2 for x in xs], [b["c_to_i"] for b in blocks], width=0.4, label=FLIP_LABELS["c_to_i"])
    ax.set_xticks(list(xs), labels)
    ax.set(xlabel="rounds", ylabel="share of examples", title="Flips by round")
    ax.legend()
    return fig


UNCERTAINTY_SERIES = (("mean_nll", "mean NLL of the answer"), ("mean_entropy", "mean token entropy"),
                      ("answer_entropy", "answer entropy over samples"))


def plot_uncertainty(summary: dict[str, Any], _probe: Any) -> Any:
    rows = summary.get("uncertainty", {}).get("by_round", [])
    series = [(key, label) for key, label in UNCERTAINTY_SERIES if any(r.get(key) is not None for r in rows)]
    eces = [(r["round"], r["option"]["ece"]) for r in rows if r.get("option")]
    if not series and not eces:
        return None
    fig, ax = _figure()
    for key, label in series:
        points = [(r["round"], r[key]) for r in rows if r.get(key) is not None]
        ax.plot(*zip(*points, strict=True), marker="o", label=label)
    if eces:
        ax.plot(*zip(*eces, strict=True), marker="s", linestyle="--", label="ECE (option confidence)")
    ax.set(xlabel="round", ylabel="nats / ECE", title="Uncertainty by round", xticks=[r["round"] for r in rows])
    ax.legend()
    return fig


def plot_concept(_summary: dict[str, Any], probe: Any) -> Any:
    if not probe:
        return None
    rows = probe["activation_by_round"]
    fig, ax = _figure()
    rounds = [r["round"] for r in rows]
    ax.plot(rounds, [r["mean_score"] for r in rows], marker="o", label="mean probe score")
    ax.plot(rounds, [r["mean_cosine"] for r in rows], marker="s", label="mean cosine with probe direction")
    ax.set(xlabel="round", ylabel="activation", xticks=rounds,
           title=f"Concept '{probe['concept']}' (layer {probe['layer']})")
    ax.legend()
    return fig


def plot_stops(summary: dict[str, Any], _probe: Any) -> Any:
    stopping = summary.get("stopping")
    if not stopping or not stopping["stop_round_histogram"]:
        return None
    histogram = stopping["stop_round_histogram"]
    fig, ax = _figure()
    ax.bar([int(r) for r in histogram], list(histogram.values()))
    title = f"Stop round (rule: {stopping['rule']})" + (" — ORACLE" if stopping.get("label") else "")
    ax.set(xlabel="round", ylabel="trajectories", title=title, xticks=[int(r) for r in histogram])
    return fig


FIGURES: dict[str, Callable[[dict[str, Any], Any], Any]] = {
    "accuracy": plot_accuracy, "flips": plot_flips, "uncertainty": plot_uncertainty, "concept": plot_concept,
    "stop_rounds": plot_stops}


def _fmt(value: Any, signed: bool = False) -> str:
    if value is None:
        return "–"
    return f"{value:+.3f}" if signed else f"{value:.3f}"


def round_table(summary: dict[str, Any], probe: Any) -> str:
    """The per-round table: accuracy with CI, flips into the round, uncertainty, concept activation."""
    metrics = summary["metrics"]
    flips = {b["to"]: b for b in metrics["transitions"]}
    unc = {r["round"]: r for r in summary.get("uncertainty", {}).get("by_round", [])}
    concept = {r["round"]: r for r in (probe or {}).get("activation_by_round", [])}
    head = ["round", "accuracy [95% CI]", FLIP_LABELS["i_to_c"], FLIP_LABELS["c_to_i"], "mean NLL", "token entropy",
            "answer entropy", "ECE", "probe score"]
    body = []
    for row in metrics["accuracy_by_round"]:
        t = row["round"]
        u = unc.get(t, {})
        cells = [str(t), f"{_fmt(row['value'])} [{_fmt(row['ci'][0])}, {_fmt(row['ci'][1])}]",
                 _fmt(flips.get(t, {}).get("i_to_c")), _fmt(flips.get(t, {}).get("c_to_i")),
                 _fmt(u.get("mean_nll")), _fmt(u.get("mean_entropy")), _fmt(u.get("answer_entropy")),
                 _fmt((u.get("option") or {}).get("ece")), _fmt(concept.get(t, {}).get("mean_score"))]
        body.append("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in cells) + "</tr>")
    return ("<table><tr>" + "".join(f"<th>{h}</th>" for h in head) + "</tr>" + "".join(body) + "</table>")


def _facts(summary: dict[str, Any], probe: Any) -> list[str]:
    facts = [f"method <b>{html.escape(str(summary.get('method', 'intrinsic')))}</b>, task "
             f"<b>{html.escape(str(summary['task'].get('name')))}</b>, model {html.escape(str(summary['model']))}, "
             f"seed {summary['seed']}, {summary['metrics']['n_examples']} examples"]
    stopping = summary.get("stopping") or {}
    if stopping.get("label"):
        facts.append(f"<b>ORACLE RUN</b>: {html.escape(stopping['label'])}")
    if summary.get("convergence"):
        found = summary["convergence"]["round"] or "none (accuracy still moving at the last round)"
        facts.append(f"convergence round: <b>{found}</b> "
                     f"({html.escape(summary['convergence']['rule'])})")
    checks = summary.get("checks")
    if checks and checks.get("accuracy") is not None:
        gain = checks["gain"]
        facts.append(f"check accuracy ({checks['source']}): {checks['accuracy']:.3f}, gain "
                     f"{gain['value']:+.3f} [{gain['ci'][0]:+.3f}, {gain['ci'][1]:+.3f}]")
    if probe:
        auc = probe["held_out_auroc"]
        facts.append(f"probe held-out AUROC {auc['value']:.3f} [{auc['ci'][0]:.3f}, {auc['ci'][1]:.3f}] "
                     f"on {auc['n_examples']} examples (trained on {html.escape(probe['trained_on'])})")
        controls = {"nll_baseline_auroc": "mean NLL of the answer in context instead of hidden states",
                    "question_only_auroc": "the probe fitted on the question alone (round-1 states)"}
        for key, what in controls.items():
            if probe.get(key):
                control = probe[key]
                facts.append(f"same rows, {what}: AUROC {control['value']:.3f} "
                             f"[{control['ci'][0]:.3f}, {control['ci'][1]:.3f}]")
    return facts


def build_report(run_dir: str | Path) -> Path:
    """Write the PNGs and `report/index.html`; returns the page's path."""
    import matplotlib

    matplotlib.use("Agg")  # files only, never a window
    import matplotlib.pyplot as plt

    summary, probe = load_results(run_dir)
    folder = Path(run_dir) / REPORT_DIR
    folder.mkdir(exist_ok=True)
    images = []
    for name, draw in FIGURES.items():
        fig = draw(summary, probe)
        if fig is None:
            continue
        fig.tight_layout()
        path = folder / f"{name}.png"
        fig.savefig(path)
        plt.close(fig)
        images.append((name, base64.b64encode(path.read_bytes()).decode("ascii")))
    page = ["<!doctype html><html><head><meta charset='utf-8'><title>selfcorrect report</title>",
            "<style>body{font-family:sans-serif;max-width:1000px;margin:auto}td,th{padding:2px 8px;"
            "border-bottom:1px solid #ddd}img{max-width:48%}</style></head><body>",
            f"<h1>Run {html.escape(Path(run_dir).name)}</h1>",
            "<ul>" + "".join(f"<li>{fact}</li>" for fact in _facts(summary, probe)) + "</ul>",
            round_table(summary, probe),
            *[f"<img alt='{name}' src='data:image/png;base64,{data}'>" for name, data in images],
            "</body></html>"]
    from selfcorrect.runs import atomic_write_text

    index = folder / "index.html"
    atomic_write_text(index, "\n".join(page) + "\n")
    return index
