"""`selfcorrect`: one command, sub-commands per job. Heavy imports happen inside commands, so `--help` is instant.

Bad input (unknown task, unknown config key, broken file, missing model folder) is reported as one line on stderr
with exit code 2; a traceback means a bug in selfcorrect.
"""

from __future__ import annotations

import sys
from pathlib import Path

import typer

from selfcorrect.commands.common import config_from_cli
from selfcorrect.commands.options import ConfigFile, Out, Overrides, Quiet, Seed, Task
from selfcorrect.errors import SelfCorrectError

app = typer.Typer(help="Train, run and measure self-correction in language models.", no_args_is_help=True,
                  add_completion=False, pretty_exceptions_enable=False,
                  epilog="Quick start: `selfcorrect demo` (pretrains the CPU sandbox model once, then evaluates it).")
sandbox_app = typer.Typer(help="The CPU sandbox: a tiny model trained from scratch here.", no_args_is_help=True)
app.add_typer(sandbox_app, name="sandbox")

@app.command("tasks")
def tasks_command() -> None:
    """List the registered tasks, one line each."""
    from selfcorrect.tasks import task_class, task_names

    for name in task_names():
        typer.echo(f"{name:<15} {task_class(name).description}")


@app.command("models")
def models_command() -> None:
    """List the built-in models: name, parameters, whether cached, and where."""
    from selfcorrect.models import BUILTIN_MODELS

    for model in BUILTIN_MODELS.values():
        state = "cached" if model.cached() else "made on first use"
        typer.echo(f"{model.name:<22} {model.parameters / 1e6:>7.1f}M  {state:<17} {model.folder()}")
        typer.echo(f"{'':<22} {model.description}")


@sandbox_app.command("pretrain")
def sandbox_pretrain(ctx: typer.Context, out: Out = None, task: Task = None, seed: Seed = None,
                     config: ConfigFile = None, overrides: Overrides = None, quiet: Quiet = False) -> None:
    """Pretrain the sandbox model from scratch on the CPU into --out (default: the shared sandbox cache) and report
    its loss curve."""
    from selfcorrect.sandbox.cache import ensure_sandbox, pretrain_to
    from selfcorrect.sandbox.pretrain import PretrainConfig, load_report, stuck_warning
    from selfcorrect.tasks.sandbox_chain import SandboxChainTask

    if task not in (None, SandboxChainTask.name):
        raise SelfCorrectError(f"sandbox pretrain supports task {SandboxChainTask.name!r}, not {task!r}")
    cfg = config_from_cli(PretrainConfig, ctx)
    if out is None:
        model_dir = ensure_sandbox(cfg, quiet=quiet)
    else:
        if out.exists() and any(out.iterdir()):
            raise SelfCorrectError(f"output folder {out} already exists; choose another --out")
        from selfcorrect.progress import Progress

        with Progress(quiet=quiet) as progress:
            progress.add("pretraining", cfg.phase1_steps + cfg.phase2_steps)
            model_dir = pretrain_to(cfg, out, lambda _p, n: progress.advance("pretraining", n))
    report = load_report(model_dir)
    for entry in report["loss_curve"]:
        typer.echo(f"{entry['phase']:<10} step {entry['step']:>5}  loss {entry['loss']:.4f}")
    typer.echo(f"noise floor (plain trace, per token): {report['noise_floor_plain']:.4f}")
    warning = stuck_warning(report, model_dir)
    if warning:
        typer.echo(warning, err=True)
    typer.echo(f"model: {model_dir}")


@app.command("demo")
def demo_command(out: Out = Path("runs/demo"), seed: Seed = None, quiet: Quiet = False) -> None:
    """The main job: pretrain (or load) the sandbox model and measure one round of self-correction on it."""
    from selfcorrect.demo import run_demo

    run_demo(out, seed=seed or 0, quiet=quiet)


COMMAND_MODULES = ("selfcorrect.commands.eval", "selfcorrect.commands.stasc", "selfcorrect.commands.inference",
                   "selfcorrect.commands.insec", "selfcorrect.commands.serve")
"""Modules that add commands with `register(app)`; each keeps its heavy imports inside its command functions."""


def _register_commands() -> None:
    import importlib

    from selfcorrect.icalign.cli import app as icalign_app

    for name in COMMAND_MODULES:
        importlib.import_module(name).register(app)
    app.add_typer(icalign_app, name="icalign", help="The in-context alignment lab (arXiv 2405.18634).")


_register_commands()


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit code (2 for bad input) instead of raising."""
    try:
        app(args=argv, prog_name="selfcorrect", standalone_mode=False)
    except SelfCorrectError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except typer.Exit as exc:
        return exc.exit_code
    except (typer.Abort, KeyboardInterrupt):
        print("aborted", file=sys.stderr)
        return 130
    except typer.TyperException as exc:  # usage errors: unknown command or option, bad value (exit code 2)
        exc.show()
        return exc.exit_code
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
