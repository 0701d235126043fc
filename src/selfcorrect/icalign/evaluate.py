"""Evaluation: 1 − cos(ŷ_n, x W*) against the number n of in-context examples, for the transformer and for GD.

The metric is the reference's (its plots call it "Normalized MSE", but it is 1 − cosine similarity): 0 is the aligned
response, 1 is orthogonal to it, 2 is its opposite. It is computed on one fixed, seeded eval batch per run at every
reward-noise rate p. The noise masks are drawn from one generator seed for every p, so the rewards replaced at
p = 0.25 are also replaced at p = 0.5 (nested noise: the curves differ only by the noise rate).

Intervals: within a run, mean ± t·sd/√B over the eval batch; across seeds, mean ± t·sd/√S over the per-seed means
(Student t, two-sided 95%). With a single seed the across-seed interval falls back to that run's batch interval,
and the result says which one it is.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from selfcorrect.runs import environment_info, read_json, write_json

if TYPE_CHECKING:
    from selfcorrect.icalign.model import ICATransformer
    from selfcorrect.icalign.presets import RunConfig

EVAL_FILE = "eval.json"
# Two-sided 95% Student-t quantiles for 1 … 30 degrees of freedom; above that the normal 1.96 is within 2%.
_T975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145, 2.131,
         2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042)


def t_quantile(df: int) -> float:
    return _T975[df - 1] if df <= len(_T975) else 1.96


def mean_interval(values: np.ndarray) -> dict[str, list[float]]:
    """Mean and 95% t-interval along axis 0 of a (samples, n) array, as lists indexed by n."""
    values = np.asarray(values, dtype=float)
    mean = values.mean(axis=0)
    k = values.shape[0]
    half = t_quantile(k - 1) * values.std(axis=0, ddof=1) / np.sqrt(k) if k > 1 else np.zeros_like(mean)
    return {"mean": mean.tolist(), "lo": (mean - half).tolist(), "hi": (mean + half).tolist()}


def noise_key(p: float) -> str:
    """JSON object keys are strings; one spelling for every file ("0.25")."""
    return f"{p:g}"


def evaluate_model(model: ICATransformer, config: RunConfig) -> dict[str, Any]:
    """Curves of a trained model for every noise rate in `config.eval`."""
    import torch
    import torch.nn.functional as F

    from selfcorrect.icalign.data import sample_batch
    from selfcorrect.icalign.gd import gd_predictions

    ev, task = config.eval, config.task
    clean = sample_batch(ev.batch_size, task.n_points, task.dim, torch.Generator().manual_seed(ev.seed))
    target = clean.target.unsqueeze(1)
    curves: dict[str, Any] = {}
    for p in ev.noise:
        batch = clean.with_noise(p, torch.Generator().manual_seed(ev.seed + 1))
        with torch.no_grad():
            tf = model(batch.tokens())
        gd = gd_predictions(batch, torch.Generator().manual_seed(ev.seed + 2), steps=ev.gd_steps, lr=ev.gd_lr,
                            optimizer=ev.gd_optimizer, loss=task.loss, reward=task.reward)
        curves[noise_key(p)] = {name: mean_interval((1 - F.cosine_similarity(pred, target, dim=-1)).numpy())
                                for name, pred in (("tf", tf), ("gd", gd))}
    return {"n_examples": list(range(task.n_points)), "eval": ev.model_dump(), "curves": curves}


def evaluate_run(run_dir: str | Path, overrides: dict[str, Any] | None = None, quiet: bool = False) -> dict[str, Any]:
    """Evaluate the FINAL model of a finished run and write eval.json next to it."""
    from selfcorrect.config import build_config, merge, read_yaml
    from selfcorrect.icalign.presets import RunConfig
    from selfcorrect.icalign.train import load_final

    run_dir = Path(run_dir)
    config = build_config(RunConfig, merge(read_yaml(run_dir / "config.yaml"), overrides or {}),
                          source=str(run_dir / "config.yaml"))
    result = evaluate_model(load_final(run_dir, config), config)
    result["environment"] = environment_info()
    write_json(run_dir / EVAL_FILE, result)
    if not quiet:
        print(format_curves(result["curves"], result["n_examples"]))
    return result


def read_eval(run_dir: str | Path) -> dict[str, Any] | None:
    path = Path(run_dir) / EVAL_FILE
    return read_json(path) if path.is_file() else None


def aggregate_seeds(evals: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Per noise rate and learner: the mean over seeds of the per-seed curves, with the across-seed interval (or the
    batch interval when there is one seed), and the per-seed curves themselves."""
    out: dict[str, Any] = {}
    for key in evals[0]["curves"]:
        out[key] = {}
        for learner in ("tf", "gd"):
            per_seed = np.array([e["curves"][key][learner]["mean"] for e in evals])
            if len(evals) > 1:
                agg = {**mean_interval(per_seed), "interval": "seeds"}
            else:
                agg = {**evals[0]["curves"][key][learner], "interval": "batch"}
            out[key][learner] = {**agg, "per_seed": per_seed.tolist()}
    return out


def format_curves(curves: dict[str, Any], n_examples: Sequence[int], show: Sequence[int] = (2, 3, 8, 15)) -> str:
    """A small text table: 1 − cos of TF and GD at a few example counts, one row per noise rate."""
    cols = [n for n in show if n in n_examples]
    head = "noise  " + "  ".join(f"TF@{n:<2d}  GD@{n:<2d}" for n in cols)
    rows = [head]
    for key, c in curves.items():
        rows.append(f"{key:<6} " + "  ".join(f"{c['tf']['mean'][n]:.3f}  {c['gd']['mean'][n]:.3f}" for n in cols))
    return "\n".join(rows)
