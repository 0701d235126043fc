"""The sweep behind the six-panel figure: every model variant × every seed, trained, evaluated, aggregated.

Variants are built around the preset's base model, one factor at a time:

    depth-L    n_layer = L            for L in sweep.depths
    heads-h    n_head = h             width fixed, or h · sweep.head_width when that is set (the paper's way)
    linear     softmax attention → linear attention
    no-mlp     the MLP sub-blocks removed
    base       (also the model of the TF-vs-GD and reward-noise panels)

A variant equal to the base (depth-3 when the base has 3 layers) is the same run, trained once. Each run is a normal
training run folder under <out>/runs/<model>-s<seed>/ (config.yaml, checkpoint.pt, model.pt, eval.json), so `--resume`
picks up a killed sweep at the run and checkpoint where it stopped, and skips evaluations already written.
results.json holds the across-seed curves of every model and the panel layout; the figure is drawn from it alone.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from selfcorrect.config import build_config
from selfcorrect.icalign.evaluate import aggregate_seeds, evaluate_run, read_eval
from selfcorrect.icalign.presets import ModelSettings, RunConfig, SweepConfig
from selfcorrect.runs import RunFolder, environment_info, removes_fresh_output_on_error, write_json

RESULTS_FILE = "results.json"


def run_name(model: ModelSettings) -> str:
    """A folder name that identifies the architecture, so equal variants share one run."""
    attention = "softmax" if model.softmax else "linear"
    return f"L{model.n_layer}-H{model.n_head}-W{model.n_embd}-{attention}{'' if model.mlp else '-nomlp'}"


def _variant(base: ModelSettings, **change: Any) -> ModelSettings:
    return build_config(ModelSettings, {**base.model_dump(), **change}, source="sweep variant")


def panels(cfg: SweepConfig) -> dict[str, list[tuple[str, ModelSettings]]]:
    """Panel name -> [(legend label, model)], in plotting order."""
    base, sw = cfg.model, cfg.sweep

    def width(heads: int) -> int:
        return heads * sw.head_width if sw.head_width else base.n_embd

    return {
        "depth": [(f"{n} layer{'s' * (n != 1)}", _variant(base, n_layer=n)) for n in sw.depths],
        "attention": [("softmax", base), ("linear", _variant(base, softmax=False))],
        "heads": [(f"{h} head{'s' * (h != 1)}", _variant(base, n_head=h, n_embd=width(h))) for h in sw.heads],
        "mlp": [("with MLP", base), ("without MLP", _variant(base, mlp=False))],
    }


@removes_fresh_output_on_error
def run_sweep(cfg: SweepConfig, out: str | Path, resume: bool = False, quiet: bool = False) -> dict[str, Any]:
    """Train and evaluate every (model, seed) of the sweep that is not done yet; write results.json."""
    folder = RunFolder.open(out, cfg.model_dump(), resume=resume)
    layout = panels(cfg)
    models = {run_name(cfg.model): cfg.model}
    for entries in layout.values():
        models.update((run_name(m), m) for _, m in entries)

    from selfcorrect.icalign.train import train

    start = time.perf_counter()
    runs: dict[str, Any] = {}
    for i, (name, model) in enumerate(models.items(), 1):
        evals, seconds = [], []
        for seed in cfg.sweep.seeds:
            run_dir = folder.path / "runs" / f"{name}-s{seed}"
            if not quiet:
                print(f"== [{i}/{len(models)}] {name} seed {seed}")
            run_cfg = RunConfig.model_validate({**cfg.model_dump(exclude={"sweep"}), "model": model.model_dump(),
                                                "train": {**cfg.train.model_dump(), "seed": seed}})
            seconds.append(train(run_cfg, run_dir, resume=run_dir.exists(), quiet=quiet)["seconds"])
            result = read_eval(run_dir)
            if result is None or result["eval"] != run_cfg.eval.model_dump():
                result = evaluate_run(run_dir, quiet=quiet)
            evals.append(result)
        runs[name] = {"model": model.model_dump(), "train_seconds": seconds, "curves": aggregate_seeds(evals)}
    results = {
        "preset": cfg.preset,
        "seeds": cfg.sweep.seeds,
        "n_examples": list(range(cfg.task.n_points)),
        "noise": cfg.eval.noise,
        "base": run_name(cfg.model),
        "panels": {panel: [[label, run_name(m)] for label, m in entries] for panel, entries in layout.items()},
        "runs": runs,
        "sweep_seconds_this_session": time.perf_counter() - start,
        "environment": environment_info(),
    }
    write_json(folder.path / RESULTS_FILE, results)
    return results
