"""`selfcorrect insec compare`: InSeC with on-policy negatives, InSeC with synthetic negatives and plain SFT, on the
same clean examples and the same number of optimiser steps, over several seeds: a table (mean ± std) and plots.

The arms differ only in `negatives`; `examples_per_iteration`, the fine-tuning config and the evaluation are shared,
so each arm takes the same steps on the same number of sequences (the table prints the steps to show it). Runs go
one after another (two torch processes on 2 cores slow each other ~10x), each in its own resumable folder
`<out>/<arm>-seed<s>/`, so an interrupted comparison continues with `--resume`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from selfcorrect.analysis.metrics import FLIP_LABELS
from selfcorrect.methods.insec import InSeCConfig, format_iterations, run_insec
from selfcorrect.methods.multirun import finished_or_run, mean_std
from selfcorrect.runs import RunFolder, atomic_write_text, removes_fresh_output_on_error, write_json

ARMS = {"insec-on-policy": "on_policy", "insec-synthetic": "synthetic", "sft": "none"}
COLUMNS = ("accuracy", "first_attempt_accuracy", "marker_rate", "marker_precision", "marker_recall",
           "i_to_c", "c_to_i")


@removes_fresh_output_on_error
def run_compare(base: InSeCConfig, seeds: list[int], out: Path, arms: list[str] | None = None,
                resume: bool = False, quiet: bool = False) -> dict[str, Any]:
    """Every arm x seed; config.yaml records all of it, so `--resume` needs no flag."""
    arms = arms or list(ARMS)
    RunFolder.open(out, {"base": base.model_dump(), "arms": arms, "seeds": seeds}, resume=resume)
    summaries: dict[str, list[dict[str, Any]]] = {}
    for seed in seeds:
        for arm in arms:
            config = base.model_copy(update={"negatives": ARMS[arm], "seed": seed})
            folder = out / f"{arm}-seed{seed}"
            summaries.setdefault(arm, []).append(finished_or_run(run_insec, config, folder, resume, quiet))
    table = aggregate(summaries)
    write_json(out / "compare.json", table)
    atomic_write_text(out / "compare.md", format_markdown(table))
    plot(table, out / "compare.png")
    return table


def _value(metrics: dict[str, Any], key: str) -> float | None:
    estimate = metrics.get(key)
    return None if estimate is None else estimate["value"]


def aggregate(summaries: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    """Per arm: mean ± std over seeds of the final iteration's metrics, the base model's accuracy and the steps."""
    rows: dict[str, Any] = {}
    for arm, runs in summaries.items():
        entry: dict[str, Any] = {"seeds": [r["seed"] for r in runs]}
        for key in COLUMNS:
            entry[key] = mean_std([_value(r["final"], key) for r in runs])
            entry[f"{key} per seed"] = [_value(r["final"], key) for r in runs]
        entry["base accuracy"] = mean_std([_value(r["iterations"][0]["eval"], "accuracy") for r in runs])
        entry["steps"] = mean_std([sum(row["training"]["steps"] for row in r["iterations"][1:]) for r in runs])
        entry["negatives"] = [r["iterations"][-1]["data"]["negatives"] for r in runs]
        rows[arm] = entry
    return {"columns": list(COLUMNS), "rows": rows}


def format_markdown(table: dict[str, Any]) -> str:
    cols = ["base accuracy", *table["columns"], "steps"]
    lines = ["| arm | " + " | ".join(FLIP_LABELS.get(c, c.replace("_", " ")) for c in cols) + " |",
             "|---|" + "---|" * len(cols)]
    for arm, entry in table["rows"].items():
        cells = [f"{entry[c]['mean']:.3f} ± {entry[c]['std']:.3f}" if entry[c] else "–" for c in cols[:-1]]
        cells.append(f"{entry['steps']['mean']:.0f}" if entry["steps"] else "–")
        lines.append(f"| {arm} | " + " | ".join(cells) + " |")
    lines += ["", "Final iteration on the eval split; mean ± std over seeds (ddof=1). Precision: markers that "
              "follow a wrong step or answer; recall: wrong steps or answers followed by a marker; I->C (wrong to "
              "right) and C->I (right to wrong): shares of all outputs that changed correctness across a marker."]
    return "\n".join(lines) + "\n"


def plot(table: dict[str, Any], path: Path) -> None:
    """Accuracy per arm (bars: mean; dots: seeds; dashed: the base model), and the marker's precision and recall."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    arms = list(table["rows"])
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    for i, arm in enumerate(arms):
        entry = table["rows"][arm]
        left.bar(i, entry["accuracy"]["mean"], yerr=entry["accuracy"]["std"], capsize=4, color=f"C{i}", alpha=0.7)
        seeds = [v for v in entry["accuracy per seed"] if v is not None]
        left.scatter([i] * len(seeds), seeds, color="black", s=12, zorder=3)
    base = [table["rows"][a]["base accuracy"]["mean"] for a in arms if table["rows"][a]["base accuracy"]]
    if base:
        left.axhline(sum(base) / len(base), linestyle="--", color="gray", label="base model")
        left.legend()
    left.set_xticks(range(len(arms)), arms)
    left.set_ylabel("accuracy (final answer)")
    width = 0.38
    for offset, key in ((-width / 2, "marker_precision"), (width / 2, "marker_recall")):
        # an arm that never marked has no precision: no bar, rather than a bar at 0
        means = [(table["rows"][a][key] or {}).get("mean", float("nan")) for a in arms]
        stds = [(table["rows"][a][key] or {}).get("std", 0.0) for a in arms]
        right.bar([i + offset for i in range(len(arms))], means, width, yerr=stds, capsize=3,
                  label=key.replace("_", " "))
    right.set_xticks(range(len(arms)), arms)
    right.set_ylim(0, 1.05)
    right.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def demo_config(seed: int = 0) -> InSeCConfig:
    """The sandbox setting of `configs/insec/sandbox.yaml` (a test keeps the two equal): one on-policy iteration."""
    from selfcorrect.methods.stasc import sandbox_finetune_defaults

    return InSeCConfig(negatives="on_policy", granularity="answer", negative_share=0.25, reasons=True,
                       token_init={"<fix>": "<eos>", "<why-answer>": "C"}, examples_per_iteration=1000,
                       finetune=sandbox_finetune_defaults().model_copy(update={"epochs": 4}), seed=seed)


def run_insec_demo(out: Path, seed: int = 0, quiet: bool = False) -> dict[str, Any]:
    """On-policy InSeC and plain SFT at the same steps (about a minute in all on 2 CPU cores), each continued if its
    folder is already there; prints both, because InSeC alone would hide that SFT does better on the sandbox."""
    import typer

    runs = {arm: finished_or_run(run_insec, demo_config(seed).model_copy(update={"negatives": ARMS[arm]}),
                                 out / f"{arm}-seed{seed}", resume=True, quiet=quiet)
            for arm in ("insec-on-policy", "sft")}
    for arm, summary in runs.items():
        typer.echo(f"\n{arm}: sandbox test split, temperature 1, 95% bootstrap intervals (iteration 0 = base model):")
        typer.echo(format_iterations(summary))
    typer.echo(f"run folders: {out}/<arm>-seed{seed} (docs/insec.md has the 3-seed comparison)")
    return runs


__all__ = ["ARMS", "aggregate", "demo_config", "format_markdown", "run_compare", "run_insec_demo"]
