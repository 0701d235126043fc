"""`selfcorrect icalign …`: train, evaluate, sweep and plot the in-context alignment lab.

The options come from the one table of `selfcorrect.commands.options`: `--preset` (paper or cpu), `--seed`/`--seeds`,
`--out`, `--resume`, `--quiet`, `--config FILE.yaml` and repeatable `--set key=value` overrides of the preset's config
(dotted keys, e.g. `--set train.steps=500`; preset < --config < --seed/--seeds < --set). Without `--out`, the
folders are runs/icalign-<preset>/train-s<seed> (train, eval) and runs/icalign-<preset>/sweep (sweep, plot), so
`eval` and `plot` find what `train` and `sweep` wrote. torch is imported inside the commands only, so that
`selfcorrect --help` stays fast.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from selfcorrect.commands.options import ConfigFile, Out, Overrides, Preset, Quiet, Resume, Seed, Seeds
from selfcorrect.errors import SelfCorrectError

app = typer.Typer(help="In-context alignment lab (arXiv 2405.18634): small transformers that learn to rank "
                       "(x, y, reward) triplets in context, compared with gradient descent.", no_args_is_help=True)

DEFAULT_PRESET = "cpu"


def _given(config: Path | None, flags: dict[str, Any], overrides: list[str] | None) -> dict[str, Any]:
    """What the command line changes in the preset's config: --config < flags < --set, as for every command."""
    from selfcorrect.config import merge, parse_overrides, read_yaml

    return merge(read_yaml(config) if config else {}, merge(flags, parse_overrides(overrides)))


def _train_dir(preset: str, seed: int) -> Path:
    return Path("runs") / f"icalign-{preset}" / f"train-s{seed}"


def _sweep_dir(preset: str) -> Path:
    return Path("runs") / f"icalign-{preset}" / "sweep"


def _resumed(cls: type, out: Path, preset: str | None, overrides: dict) -> Any:
    """The run's saved config; an explicit --preset or --set must agree with it (as everywhere in selfcorrect)."""
    from selfcorrect.config import merge, resumed_config
    from selfcorrect.runs import read_saved_config

    return resumed_config(cls, read_saved_config(out), merge({"preset": preset} if preset else {}, overrides),
                          str(out))


@app.command()
def train(preset: Preset = None, seed: Seed = None, out: Out = None, resume: Resume = False, quiet: Quiet = False,
          config: ConfigFile = None, overrides: Overrides = None) -> None:
    """Train one model (the preset's base model unless --set model.* says otherwise); the seed draws the weights and
    the training batches."""
    from selfcorrect.icalign.presets import RunConfig, run_config
    from selfcorrect.icalign.train import FINAL
    from selfcorrect.icalign.train import train as run_train

    given = _given(config, {"train": {"seed": seed}} if seed is not None else {}, overrides)
    if resume and out is not None:
        run = _resumed(RunConfig, out, preset, given)
    else:
        run = run_config(preset or DEFAULT_PRESET, None, given)
        out = out or _train_dir(run.preset, run.train.seed)
    summary = run_train(run, out, resume=resume, quiet=quiet)
    typer.echo(f"final loss {summary['final_loss']:.4f} after {summary['steps']} steps "
               f"({summary['seconds']:.0f} s); weights in {out / FINAL}")


@app.command("eval")
def eval_(preset: Preset = None, seed: Seed = None, out: Out = None, resume: Resume = False,
          config: ConfigFile = None, overrides: Overrides = None) -> None:
    """Evaluate the FINAL model of a trained run (--out, or the one --preset and --seed name): 1 − cos by number of
    examples, for TF and GD, at each noise rate. Only eval.* settings may change; --resume keeps an eval.json written
    with the same eval settings."""
    from selfcorrect.config import read_yaml
    from selfcorrect.icalign.evaluate import EVAL_FILE, evaluate_run, format_curves, read_eval

    given = _given(config, {}, overrides)
    if set(given) - {"eval"}:
        raise SelfCorrectError("eval takes only eval.* overrides; the model and training settings are those in the "
                               "run's config.yaml")
    out = out or _train_dir(preset or DEFAULT_PRESET, seed or 0)
    if not (out / "config.yaml").is_file():
        raise SelfCorrectError(f"{out} is not a training run (no config.yaml); train one with `icalign train`")
    saved = read_yaml(out / "config.yaml")
    if preset is not None and saved.get("preset") != preset:
        raise SelfCorrectError(f"{out} was trained with preset {saved.get('preset')!r}, not {preset!r}")
    if seed is not None and saved.get("train", {}).get("seed") != seed:
        raise SelfCorrectError(f"{out} was trained with seed {saved.get('train', {}).get('seed')!r}, not {seed!r}")
    result = read_eval(out) if resume else None
    wanted = {**saved.get("eval", {}), **given.get("eval", {})}
    if result is None or any(result["eval"].get(k) != v for k, v in wanted.items()):
        result = evaluate_run(out, given, quiet=True)
    typer.echo(format_curves(result["curves"], result["n_examples"]))
    typer.echo(f"results in {out / EVAL_FILE}")


@app.command()
def sweep(preset: Preset = None, seeds: Seeds = None, out: Out = None, resume: Resume = False, quiet: Quiet = False,
          config: ConfigFile = None, overrides: Overrides = None) -> None:
    """Train and evaluate every variant × seed (depth, heads, attention, MLP; noise at test time), then plot."""
    from selfcorrect.commands.common import parse_ints
    from selfcorrect.icalign.plot import FIGURE_FILE, plot_results
    from selfcorrect.icalign.presets import SweepConfig, sweep_config
    from selfcorrect.icalign.sweep import RESULTS_FILE, run_sweep

    flags = {"sweep": {"seeds": parse_ints(seeds, "--seeds")}} if seeds is not None else {}
    given = _given(config, flags, overrides)
    if resume and out is not None:
        run = _resumed(SweepConfig, out, preset, given)
    else:
        run = sweep_config(preset or DEFAULT_PRESET, None, given)
        out = out or _sweep_dir(run.preset)
    results = run_sweep(run, out, resume=resume, quiet=quiet)
    figure = plot_results(results, out / FIGURE_FILE)
    typer.echo(f"results in {out / RESULTS_FILE}, figure in {figure}")


@app.command()
def plot(preset: Preset = None, out: Out = None) -> None:
    """Draw the six-panel figure from the results.json of a sweep (--out, default runs/icalign-<preset>/sweep)."""
    from selfcorrect.icalign.plot import FIGURE_FILE, load_results, plot_results

    out = out or _sweep_dir(preset or DEFAULT_PRESET)
    typer.echo(f"figure in {plot_results(load_results(out), out / FIGURE_FILE)}")
