"""`selfcorrect stasc` (one run) and `selfcorrect stasc sweep` (variants x seeds + controls)."""

from __future__ import annotations

import typer

from selfcorrect.commands.common import config_from_cli, parse_ints, resumed_list
from selfcorrect.commands.options import (
    Backend,
    BudgetFrom,
    ConfigFile,
    Controls,
    Iterations,
    Method,
    Model,
    NCorr,
    NInit,
    Out,
    Overrides,
    Quiet,
    ReportTo,
    Resume,
    RunDirs,
    Seed,
    Seeds,
    Task,
    Temperature,
    Variant,
    Variants,
)

stasc_app = typer.Typer(help="STaSC: self-taught self-correction training (arXiv 2503.08681).",
                        invoke_without_command=True)


@stasc_app.callback()
def stasc_command(ctx: typer.Context, out: Out = None, variant: Variant = None, method: Method = None,
                  budget_from: BudgetFrom = None, iterations: Iterations = None, n_init: NInit = None,
                  n_corr: NCorr = None, temperature: Temperature = None, model: Model = None, backend: Backend = None,
                  task: Task = None, report_to: ReportTo = None, seed: Seed = None, resume: Resume = False,
                  config: ConfigFile = None, overrides: Overrides = None, quiet: Quiet = False) -> None:
    """Run STaSC with every design choice from a YAML config plus CLI overrides."""
    if ctx.invoked_subcommand is not None:
        return
    from selfcorrect.errors import SelfCorrectError
    from selfcorrect.methods.stasc import STaSCConfig, iteration_table, run_stasc

    if out is None:
        raise SelfCorrectError("stasc needs --out (the run folder)")
    cfg = config_from_cli(STaSCConfig, ctx, resume_from=out if resume else None)
    summary = run_stasc(cfg, out, resume=resume, quiet=quiet)
    for where in summary["iterations"][0]["eval"]:
        typer.echo(f"\n{cfg.method.upper()} {cfg.variant}, {where} (95% bootstrap intervals):")
        typer.echo(iteration_table(summary, where))
    selection = summary["selection"]
    typer.echo(f"\nselected iteration (on {selection['selected_on']}): {selection['iteration']}"
               if "iteration" in selection else f"\nno iteration selected: {selection['note']} (set select_split "
               f"and select_temperature to one of the evaluations)")
    typer.echo(f"run folder: {out}")


@stasc_app.command("sweep")
def sweep_command(ctx: typer.Context, out: Out, variants: Variants = None, seeds: Seeds = None,
                  controls: Controls = None, resume: Resume = False, config: ConfigFile = None,
                  overrides: Overrides = None, quiet: Quiet = False) -> None:
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
    base = config_from_cli(STaSCConfig, ctx, resume_from=saved, section="base")
    chosen = resumed_list(variants, "all", saved, "variants", "--variants", parse_variants)
    seed_list = resumed_list(seeds, "0,1,2", saved, "seeds", "--seeds", lambda text: parse_ints(text, "--seeds"))
    control_list = resumed_list(controls, "star,gold", saved, "controls", "--controls",
                                lambda text: [] if text in ("", "none") else [c.strip() for c in text.split(",")])
    table = run_sweep(base, chosen, seed_list, control_list, out, resume=resume, quiet=quiet)
    typer.echo(format_markdown(table))
    typer.echo(f"sweep folder: {out}")


@stasc_app.command("table")
def table_command(runs: RunDirs) -> None:
    """Mean ± std over seeds of finished runs, grouped by variant and control, at validation-selected iterations."""
    from selfcorrect.methods.stasc_sweep import format_markdown, table_from_runs

    typer.echo(format_markdown(table_from_runs(runs)))


def register(app: typer.Typer) -> None:
    app.add_typer(stasc_app, name="stasc")
