"""`selfcorrect insec` (one run), `selfcorrect insec compare` (on-policy vs synthetic vs SFT x seeds) and
`selfcorrect insec demo-run` (the short run `make demo` can call)."""

from __future__ import annotations

from pathlib import Path

import typer

from selfcorrect.commands.common import config_from_cli, parse_ints, resumed_list
from selfcorrect.commands.options import (
    Arms,
    Backend,
    ConfigFile,
    Granularity,
    Iterations,
    MistakeLoss,
    Model,
    Negatives,
    Out,
    Overrides,
    Quiet,
    Resume,
    Seed,
    Seeds,
    Task,
)

insec_app = typer.Typer(help="InSeC: internalized self-correction training with inline mistakes and corrections "
                             "(arXiv 2412.16653).", invoke_without_command=True)


@insec_app.callback()
def insec_command(ctx: typer.Context, out: Out = None, negatives: Negatives = None, granularity: Granularity = None,
                  mistake_loss: MistakeLoss = None, iterations: Iterations = None, model: Model = None,
                  backend: Backend = None, task: Task = None, seed: Seed = None, resume: Resume = False,
                  config: ConfigFile = None, overrides: Overrides = None, quiet: Quiet = False) -> None:
    """Run InSeC from a YAML config plus CLI overrides, and print accuracy and marker behaviour per iteration."""
    if ctx.invoked_subcommand is not None:
        return
    from selfcorrect.errors import SelfCorrectError
    from selfcorrect.methods.insec import InSeCConfig, format_iterations, run_insec

    if out is None:
        raise SelfCorrectError("insec needs --out (the run folder)")
    cfg = config_from_cli(InSeCConfig, ctx, resume_from=out if resume else None)
    summary = run_insec(cfg, out, resume=resume, quiet=quiet)
    typer.echo(f"\nInSeC ({cfg.negatives} negatives), {cfg.eval_split} split at T={cfg.eval_temperature:g} "
               "(95% bootstrap intervals):")
    typer.echo(format_iterations(summary))
    typer.echo(f"run folder: {out}")


@insec_app.command("compare")
def compare_command(ctx: typer.Context, out: Out, seeds: Seeds = None, arms: Arms = None, resume: Resume = False,
                    config: ConfigFile = None, overrides: Overrides = None, quiet: Quiet = False) -> None:
    """On-policy InSeC, synthetic InSeC and plain SFT at equal steps, over seeds: table (mean ± std) and plots."""
    from selfcorrect.errors import SelfCorrectError
    from selfcorrect.methods.insec import InSeCConfig
    from selfcorrect.methods.insec_compare import ARMS, format_markdown, run_compare

    def parse_arms(text: str) -> list[str]:
        chosen = [a.strip() for a in text.split(",") if a.strip()]
        unknown = [a for a in chosen if a not in ARMS]
        if unknown:
            raise SelfCorrectError(f"unknown arm(s) {', '.join(unknown)}; arms are {', '.join(ARMS)}")
        return chosen

    saved = out if resume else None
    base = config_from_cli(InSeCConfig, ctx, resume_from=saved, section="base")
    chosen = resumed_list(arms, ",".join(ARMS), saved, "arms", "--arms", parse_arms)
    seed_list = resumed_list(seeds, "0,1,2", saved, "seeds", "--seeds", lambda text: parse_ints(text, "--seeds"))
    table = run_compare(base, seed_list, out, chosen, resume=resume, quiet=quiet)
    typer.echo(format_markdown(table))
    typer.echo(f"comparison folder: {out} (compare.md, compare.json, compare.png)")


@insec_app.command("demo-run")
def demo_command(out: Out = Path("runs/demo/insec"), seed: Seed = None, quiet: Quiet = False) -> None:
    """One short on-policy InSeC round on the sandbox, continued when --out exists: what `make demo` shows."""
    from selfcorrect.methods.insec_compare import run_insec_demo

    run_insec_demo(out, seed=seed or 0, quiet=quiet)


def register(app: typer.Typer) -> None:
    app.add_typer(insec_app, name="insec")
