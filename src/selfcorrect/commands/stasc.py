"""`selfcorrect stasc` (one run) and `selfcorrect stasc sweep` (variants x seeds + controls)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from selfcorrect.commands.common import (
    ConfigFile,
    Overrides,
    Quiet,
    Resume,
    SeedOverride,
    config_from_cli,
    parse_ints,
    resumed_list,
)

stasc_app = typer.Typer(help="STaSC: self-taught self-correction training (arXiv 2503.08681).",
                        invoke_without_command=True)

Out = Annotated[Path | None, typer.Option(help="Run folder to create (or continue with --resume).")]


@stasc_app.callback()
def stasc_command(
    ctx: typer.Context,
    out: Out = None,
    variant: Annotated[str | None, typer.Option(help="EIE (default), EIF, ENE, ENF, FIE, FIF, FNE, FNF.")] = None,
    method: Annotated[str | None, typer.Option(help="stasc, or an equal-budget control: star, gold.")] = None,
    budget_from: Annotated[str | None, typer.Option(help="STaSC run whose budget a control matches.")] = None,
    iterations: Annotated[int | None, typer.Option(help="Number of STaSC iterations.")] = None,
    n_init: Annotated[int | None, typer.Option("--n-init", help="Initial answers per question.")] = None,
    n_corr: Annotated[int | None, typer.Option("--n-corr", help="Corrections per initial answer.")] = None,
    temperature: Annotated[float | None, typer.Option(help="Sampling temperature for training data.")] = None,
    model: Annotated[str | None, typer.Option(help="M0: built-in model name, folder or hub id.")] = None,
    task: Annotated[str | None, typer.Option(help="Task name.")] = None,
    report_to: Annotated[str | None, typer.Option("--report-to", help="wandb, mlflow or tensorboard.")] = None,
    seed: SeedOverride = None,
    resume: Resume = False,
    config: ConfigFile = None,
    overrides: Overrides = None,
    quiet: Quiet = False,
) -> None:
    """Run STaSC with every design choice from a YAML config plus CLI overrides."""
    if ctx.invoked_subcommand is not None:
        return
    from selfcorrect.errors import SelfCorrectError
    from selfcorrect.methods.stasc import STaSCConfig, iteration_table, run_stasc

    if out is None:
        raise SelfCorrectError("stasc needs --out (the run folder)")
    flags = {"variant": variant, "method": method, "budget_from": budget_from, "iterations": iterations,
             "n_init": n_init, "n_corr": n_corr, "temperature": temperature, "model": model, "task": task,
             "report_to": report_to, "seed": seed}
    cfg = config_from_cli(STaSCConfig, config, overrides, flags, resume_from=out if resume else None)
    summary = run_stasc(cfg, out, resume=resume, quiet=quiet)
    for where in summary["iterations"][0]["eval"]:
        typer.echo(f"\n{cfg.method.upper()} {cfg.variant}, {where} (95% bootstrap intervals):")
        typer.echo(iteration_table(summary, where))
    typer.echo(f"\nselected iteration (on {summary['selection'].get('selected_on')}): "
               f"{summary['selection'].get('iteration')}")
    typer.echo(f"run folder: {out}")


@stasc_app.command("sweep")
def sweep_command(
    out: Annotated[Path, typer.Option(help="Folder for all runs of the sweep.")],
    variants: Annotated[str | None, typer.Option(help="Comma-separated variants, or `all` (the default).")] = None,
    seeds: Annotated[str | None, typer.Option(help="Comma-separated seeds (default 0,1,2).")] = None,
    controls: Annotated[str | None, typer.Option(help="Comma-separated equal-budget controls (star, gold) or none "
                                                      "(default star,gold).")] = None,
    resume: Resume = False,
    config: ConfigFile = None,
    overrides: Overrides = None,
    quiet: Quiet = False,
) -> None:
    """Several variants and seeds (and controls): a Table-2-style table (mean ± std) and plots."""
    from selfcorrect.errors import SelfCorrectError
    from selfcorrect.methods.stasc import VARIANTS, STaSCConfig
    from selfcorrect.methods.stasc_sweep import format_markdown, run_sweep

    def parse_variants(text: str) -> list[str]:
        chosen = list(VARIANTS) if text == "all" else [v.strip().upper() for v in text.split(",")]
        unknown = [v for v in chosen if v not in VARIANTS]
        if unknown:
            raise SelfCorrectError(f"unknown variant(s) {', '.join(unknown)}; the 8 variants are "
                                   f"{', '.join(VARIANTS)}")
        return chosen

    saved = out if resume else None
    base = config_from_cli(STaSCConfig, config, overrides, {}, resume_from=saved, section="base")
    chosen = resumed_list(variants, "all", saved, "variants", "--variants", parse_variants)
    seed_list = resumed_list(seeds, "0,1,2", saved, "seeds", "--seeds", lambda text: parse_ints(text, "--seeds"))
    control_list = resumed_list(controls, "star,gold", saved, "controls", "--controls",
                                lambda text: [] if text in ("", "none") else [c.strip() for c in text.split(",")])
    table = run_sweep(base, chosen, seed_list, control_list, out, resume=resume, quiet=quiet)
    typer.echo(format_markdown(table))
    typer.echo(f"sweep folder: {out}")


@stasc_app.command("table")
def table_command(
    runs: Annotated[list[Path], typer.Argument(help="Finished STaSC run folders (e.g. runs/sweep/*).")],
) -> None:
    """Mean ± std over seeds of finished runs, grouped by variant and control, at validation-selected iterations."""
    from selfcorrect.methods.stasc_sweep import format_markdown, table_from_runs

    typer.echo(format_markdown(table_from_runs(runs)))


def register(app: typer.Typer) -> None:
    app.add_typer(stasc_app, name="stasc")
