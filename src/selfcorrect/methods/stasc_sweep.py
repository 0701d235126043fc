"""`selfcorrect stasc sweep`: several variants and seeds, plus equal-budget controls, as a table like the paper's
Table 2 (mean ± std over seeds) and plots of accuracy by iteration.

Runs go one after another (two torch processes on 2 cores run ~10x slower), each in its own resumable run folder
`<out>/<variant>-seed<s>/`; a sweep interrupted anywhere continues with `--resume`. Controls (`star`, `gold`) take
their per-iteration example counts and optimiser steps from the same seed's run of the `budget_variant`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from selfcorrect.errors import SelfCorrectError
from selfcorrect.methods.multirun import finished_or_run, mean_std
from selfcorrect.methods.stasc import STaSCConfig, run_stasc
from selfcorrect.runs import RunFolder, atomic_write_text, removes_fresh_output_on_error, write_json


def run_name(label: str, seed: int) -> str:
    return f"{label}-seed{seed}"


@removes_fresh_output_on_error
def run_sweep(base: STaSCConfig, variants: list[str], seeds: list[int], controls: list[str], out: Path,
              resume: bool = False, quiet: bool = False, budget_variant: str = "EIE") -> dict[str, Any]:
    """Every variant x seed, then every control x seed; config.yaml records all of it, so `--resume` needs no flag."""
    RunFolder.open(out, {"base": base.model_dump(), "variants": variants, "seeds": seeds, "controls": controls,
                         "budget_variant": budget_variant}, resume=resume)
    summaries: dict[str, list[dict[str, Any]]] = {}
    for seed in seeds:
        for variant in variants:
            config = base.model_copy(update={"variant": variant, "seed": seed, "method": "stasc"})
            folder = out / run_name(variant, seed)
            summaries.setdefault(variant, []).append(finished_or_run(run_stasc, config, folder, resume, quiet))
        for control in controls:
            config = base.model_copy(update={"variant": budget_variant, "seed": seed, "method": control,
                                             "budget_from": str(out / run_name(budget_variant, seed))})
            folder = out / run_name(control, seed)
            summaries.setdefault(control.upper(), []).append(finished_or_run(run_stasc, config, folder, resume,
                                                                             quiet))
    table = aggregate(summaries, base)
    write_json(out / "sweep.json", table)
    atomic_write_text(out / "sweep.md", format_markdown(table))
    plot_by_iteration(table, out / "accuracy_by_iteration.png")
    return table


def table_from_runs(folders: list[Path]) -> dict[str, Any]:
    """Aggregate finished run folders (anything with a summary.json), grouped as variants and controls."""
    from selfcorrect.config import build_config, read_yaml

    summaries: dict[str, list[dict[str, Any]]] = {}
    base = None
    for folder in sorted(folders):
        if not folder.is_dir():
            raise SelfCorrectError(f"{folder}: no such run folder")
        run = RunFolder(folder)
        if not run.finished:
            continue
        summary = run.read_summary()
        base = base or build_config(STaSCConfig, read_yaml(folder / "config.yaml"), str(folder / "config.yaml"))
        label = summary["variant"] if summary["method"] == "stasc" else summary["method"].upper()
        summaries.setdefault(label, []).append(summary)
    if base is None:
        raise SelfCorrectError("no finished STaSC run (a folder with summary.json) among the given folders")
    return aggregate(summaries, base)


def _acc(row: dict[str, Any], where: str, t: int) -> float | None:
    metrics = row["eval"].get(where)
    return None if metrics is None else metrics["accuracy_by_round"][t - 1]["value"]


def aggregate(summaries: dict[str, list[dict[str, Any]]], base: STaSCConfig) -> dict[str, Any]:
    """Per label and eval setting: mean ± std over seeds at the validation-selected iteration, and by iteration.

    A `base` row holds iteration 0 (the untouched model) of the first run, so each table carries its own baseline;
    every run of a sweep starts from the same model.
    """
    settings = [f"test@T{t:g}" for t in base.eval_temperatures]
    all_runs = [r for runs in summaries.values() for r in runs]
    groups = {"base (iteration 0)": [(r, 0) for r in all_runs[:1]] if all_runs else []}
    groups.update({label: [(r, r["selection"]["iteration"]) for r in runs] for label, runs in summaries.items()})
    rows = {}
    for label, picked in groups.items():
        entry: dict[str, Any] = {"seeds": [r["seed"] for r, _ in picked],
                                 "selected_iterations": [i for _, i in picked]}
        for where in settings:
            for t in (1, 2):
                entry[f"{where} acc@t{t}"] = mean_std([_acc(r["iterations"][i], where, t) for r, i in picked])
                by_iter = [[_acc(row, where, t) for row in r["iterations"]] for r, _ in picked]
                entry[f"{where} acc@t{t} by iteration"] = [mean_std(list(v)) for v in zip(*by_iter, strict=True)]
            entry[f"{where} delta"] = mean_std([_metric(r["iterations"][i], where, "delta") for r, i in picked])
            for flip in ("delta_i_to_c", "delta_c_to_i"):
                entry[f"{where} {flip}"] = mean_std([_metric(r["iterations"][i], where, flip) for r, i in picked])
        rows[label] = entry
    return {"settings": settings, "rows": rows, "iterations": base.iterations, "task": base.task}


def _metric(row: dict[str, Any], where: str, name: str) -> float | None:
    metrics = row["eval"].get(where)
    return None if metrics is None or metrics.get(name) is None else metrics[name]["value"]


def format_markdown(table: dict[str, Any]) -> str:
    """A Table-2-style markdown table: rows = base model, variants and controls; per setting acc@t1, acc@t2, Δ and
    the flip shares, as mean ± std over seeds (n = number of seeds)."""
    cols = [f"{s} {m}" for s in table["settings"] for m in ("acc@t1", "acc@t2", "delta", "delta_i_to_c",
                                                            "delta_c_to_i")]
    lines = ["| run | n | " + " | ".join(cols) + " |", "|---|---|" + "---|" * len(cols)]
    for label, entry in table["rows"].items():
        cells = [f"{entry[c]['mean']:.3f} ± {entry[c]['std']:.3f}" if entry.get(c) else "–" for c in cols]
        lines.append(f"| {label} | {len(entry['seeds'])} | " + " | ".join(cells) + " |")
    lines.append("")
    lines.append("Mean ± std over seeds (std with ddof=1; 0 when n = 1) at the iteration selected on validation "
                 "acc@t2 (iteration 0 for the base row). delta = acc@t2 − acc@t1; delta_i_to_c / delta_c_to_i = "
                 "shares of test questions flipped I->C (wrong to right) / C->I (right to wrong) by the correction.")
    return "\n".join(lines) + "\n"


def plot_by_iteration(table: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    settings = table["settings"]
    fig, axes = plt.subplots(1, len(settings), figsize=(6 * len(settings), 4), squeeze=False)
    for ax, where in zip(axes[0], settings, strict=True):
        for label, entry in table["rows"].items():
            for t, style in ((1, "--"), (2, "-")):
                series = entry[f"{where} acc@t{t} by iteration"]
                xs = [i for i, v in enumerate(series) if v]
                ys = [series[i]["mean"] for i in xs]
                err = [series[i]["std"] for i in xs]
                ax.errorbar(xs, ys, yerr=err, linestyle=style, marker="o", capsize=2, label=f"{label} t{t}")
        ax.set_title(where)
        ax.set_xlabel("iteration")
        ax.set_ylabel("accuracy")
    axes[0][0].legend(fontsize=7, ncol=2)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
