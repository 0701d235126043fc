"""`selfcorrect icalign …`: train, evaluate, sweep and plot the in-context alignment lab.

Every command takes the same options where they mean something: `--preset` (paper or cpu), `--seed`/`--seeds`,
`--out`, `--resume`, `--quiet` and repeatable `--set key=value` overrides of the preset's config (dotted keys,
e.g. `--set train.steps=500`). Without `--out`, the folders are runs/icalign-<preset>/train-s<seed> (train, eval)
and runs/icalign-<preset>/sweep (sweep, plot), so `eval` and `plot` find what `train` and `sweep` wrote.
torch is imported inside the commands only, so that `selfcorrect --help` stays fast.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from selfcorrect.errors import SelfCorrectError

app = typer.Typer(help="In-context alignment lab (arXiv 2405.18634): small transformers that learn to rank "
                       "(x, y, reward) triplets in context, compared with gradient descent.", no_args_is_help=True)

DEFAULT_PRESET = "cpu"
Preset = Annotated[str | None, typer.Option("--preset", help="Named preset: 'cpu' (fits a 2-core CPU, the default) "
                                                            "or 'paper'.")]
Out = Annotated[Path | None, typer.Option("--out", help="Run folder (default: under runs/icalign-<preset>/).")]
Resume = Annotated[bool, typer.Option("--resume", help="Continue the run in --out from where it stopped.")]
Quiet = Annotated[bool, typer.Option("--quiet", "-q", help="Print only the final result.")]
Set = Annotated[list[str] | None, typer.Option("--set", help="Override a config key: --set train.steps=500.")]


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
def train(preset: Preset = None,
          seed: Annotated[int | None, typer.Option("--seed", help="Seed of the weights and training batches "
                                                   "(default 0).")] = None,
          out: Out = None, resume: Resume = False, quiet: Quiet = False, set_: Set = None) -> None:
    """Train one model (the preset's base model unless --set model.* says otherwise)."""
    from selfcorrect.config import merge, parse_overrides
    from selfcorrect.icalign.presets import RunConfig, run_config
    from selfcorrect.icalign.train import FINAL
    from selfcorrect.icalign.train import train as run_train

    overrides = parse_overrides(set_)
    if resume and out is not None:
        config = _resumed(RunConfig, out, preset, merge({"train": {"seed": seed}} if seed is not None else {},
                                                        overrides))
    else:
        config = run_config(preset or DEFAULT_PRESET, seed or 0, overrides)
        out = out or _train_dir(config.preset, config.train.seed)
    summary = run_train(config, out, resume=resume, quiet=quiet)
    typer.echo(f"final loss {summary['final_loss']:.4f} after {summary['steps']} steps "
               f"({summary['seconds']:.0f} s); weights in {out / FINAL}")


@app.command("eval")
def eval_(preset: Annotated[str | None, typer.Option("--preset", help="Preset the run was trained with "
                                                     "(checked against its config.yaml).")] = None,
          seed: Annotated[int, typer.Option("--seed", help="Training seed of the run (locates the default "
                                            "--out).")] = 0,
          out: Out = None,
          resume: Annotated[bool, typer.Option("--resume", help="Keep an eval.json written with the same "
                                               "eval settings instead of recomputing it.")] = False,
          quiet: Quiet = False,
          set_: Annotated[list[str] | None, typer.Option("--set", help="Override an eval setting: "
                                                         "--set eval.batch_size=1024.")] = None) -> None:
    """Evaluate the FINAL model of a trained run: 1 − cos by number of examples, for TF and GD, at each noise rate."""
    from selfcorrect.config import parse_overrides, read_yaml
    from selfcorrect.icalign.evaluate import EVAL_FILE, evaluate_run, format_curves, read_eval

    overrides = parse_overrides(set_)
    if set(overrides) - {"eval"}:
        raise SelfCorrectError("eval takes only eval.* overrides; the model and training settings are those in the "
                               "run's config.yaml")
    out = out or _train_dir(preset or DEFAULT_PRESET, seed)
    if not (out / "config.yaml").is_file():
        raise SelfCorrectError(f"{out} is not a training run (no config.yaml); train one with `icalign train`")
    saved = read_yaml(out / "config.yaml")
    if preset is not None and saved.get("preset") != preset:
        raise SelfCorrectError(f"{out} was trained with preset {saved.get('preset')!r}, not {preset!r}")
    previous = read_eval(out) if resume else None
    wanted = {**saved.get("eval", {}), **overrides.get("eval", {})}
    if previous is not None and all(previous["eval"].get(k) == v for k, v in wanted.items()):
        typer.echo(format_curves(previous["curves"], previous["n_examples"]))
    else:
        evaluate_run(out, overrides, quiet=quiet)
    typer.echo(f"results in {out / EVAL_FILE}")


@app.command()
def sweep(preset: Preset = None,
          seeds: Annotated[str, typer.Option("--seeds", help="Comma-separated seeds (default: the preset's).")] = "",
          out: Out = None, resume: Resume = False, quiet: Quiet = False, set_: Set = None) -> None:
    """Train and evaluate every variant × seed (depth, heads, attention, MLP; noise at test time), then plot."""
    from selfcorrect.commands.common import parse_ints
    from selfcorrect.config import merge, parse_overrides
    from selfcorrect.icalign.plot import FIGURE_FILE, plot_results
    from selfcorrect.icalign.presets import SweepConfig, sweep_config
    from selfcorrect.icalign.sweep import RESULTS_FILE, run_sweep

    seed_list = parse_ints(seeds, "--seeds") if seeds else None
    overrides = parse_overrides(set_)
    if resume and out is not None:
        config = _resumed(SweepConfig, out, preset, merge({"sweep": {"seeds": seed_list}} if seed_list else {},
                                                          overrides))
    else:
        config = sweep_config(preset or DEFAULT_PRESET, seed_list, overrides)
        out = out or _sweep_dir(config.preset)
    results = run_sweep(config, out, resume=resume, quiet=quiet)
    figure = plot_results(results, out / FIGURE_FILE)
    typer.echo(f"results in {out / RESULTS_FILE}, figure in {figure}")


@app.command()
def plot(preset: Preset = None,
         out: Annotated[Path | None, typer.Option("--out", help="Sweep folder holding results.json "
                                                  "(default: runs/icalign-<preset>/sweep).")] = None,
         quiet: Quiet = False) -> None:
    """Draw the six-panel figure from a sweep's saved results.json."""
    from selfcorrect.icalign.plot import FIGURE_FILE, load_results, plot_results

    out = out or _sweep_dir(preset or DEFAULT_PRESET)
    figure = plot_results(load_results(out), out / FIGURE_FILE)
    if not quiet:
        typer.echo(f"figure in {figure}")
