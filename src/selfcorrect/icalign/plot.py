"""The six-panel figure of the lab, drawn from a sweep's results.json alone (no model is loaded, nothing recomputed).

(a) TF vs GD, (b) reward noise, (c) depth, (d) softmax vs linear attention, (e) heads, (f) MLP on/off: 1 − cos(ŷ, xW*)
against the number of in-context examples, from n = 2 (a list of fewer than two responses has no ranking, so
training gives no signal there). Lines are the mean over seeds; bands the 95% interval that results.json names
(across seeds, or over the eval batch when the sweep had one seed). Panels other than (b) use clean rewards.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from selfcorrect.errors import SelfCorrectError
from selfcorrect.icalign.evaluate import noise_key
from selfcorrect.icalign.losses import MIN_EXAMPLES
from selfcorrect.icalign.sweep import RESULTS_FILE
from selfcorrect.runs import read_json

FIGURE_FILE = "icalign.png"
TITLES = {"depth": "(c) depth", "attention": "(d) attention", "heads": "(e) heads", "mlp": "(f) MLP"}


def load_results(sweep_dir: str | Path) -> dict[str, Any]:
    path = Path(sweep_dir) / RESULTS_FILE
    if not path.is_file():
        raise SelfCorrectError(f"{path} not found: run `icalign sweep` first (its --out is this folder)")
    return read_json(path)


def figure(results: dict[str, Any]) -> Any:
    """The matplotlib Figure of the six panels (a)-(f), row by row."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    clean = noise_key(0.0)
    base = results["runs"][results["base"]]["curves"]
    if clean not in base:
        raise SelfCorrectError("results have no noise-free evaluation (eval.noise must include 0)")
    n = results["n_examples"][MIN_EXAMPLES:]

    def line(ax: Any, curve: dict[str, Any], label: str, **style: Any) -> None:
        mean, lo, hi = (curve[k][MIN_EXAMPLES:] for k in ("mean", "lo", "hi"))
        (drawn,) = ax.plot(n, mean, label=label, **style)
        ax.fill_between(n, lo, hi, color=drawn.get_color(), alpha=0.15, linewidth=0)

    fig, axes = plt.subplots(2, 3, figsize=(14, 7.5), sharex=True, sharey=True)
    ax = axes[0, 0]
    line(ax, base[clean]["tf"], "transformer")
    line(ax, base[clean]["gd"], "GD reference", linestyle="--")
    ax.set_title("(a) TF vs GD")
    ax = axes[0, 1]
    for p in results["noise"]:  # in the configured order; results.json's keys are sorted as strings
        line(ax, base[noise_key(p)]["tf"], f"p = {noise_key(p)}")
    ax.set_title("(b) reward noise (TF)")
    for ax, (panel, title) in zip(axes.flat[2:], TITLES.items(), strict=True):  # results.json's keys are sorted
        for label, name in results["panels"][panel]:
            line(ax, results["runs"][name]["curves"][clean]["tf"], label)
        ax.set_title(title)
    for ax in axes.flat:
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
    for ax in axes[1]:
        ax.set_xlabel("in-context examples n")
    for ax in axes[:, 0]:
        ax.set_ylabel("1 − cos(ŷ, xW*)")
    interval = base[clean]["tf"]["interval"]
    fig.suptitle(f"in-context alignment, preset {results['preset']!r}, seeds {results['seeds']}; "
                 f"bands: 95% interval over {'seeds' if interval == 'seeds' else 'the eval batch'}")
    fig.tight_layout()
    return fig


def plot_results(results: dict[str, Any], path: str | Path) -> Path:
    import matplotlib.pyplot as plt

    fig = figure(results)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
