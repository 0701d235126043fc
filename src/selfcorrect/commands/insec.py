"""`selfcorrect insec` (one run), `selfcorrect insec compare` (on-policy vs synthetic vs SFT x seeds) and
`selfcorrect insec demo-run` (the short run `make demo` can call)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from selfcorrect.commands.common import (
    ConfigFile,
    Overrides,
    Quiet,
    Resume,
    Seed,
    SeedOverride,
    config_from_cli,
    parse_ints,
    resumed_list,
)

insec_app = typer.Typer(help="InSeC: internalized self-correction training with inline mistakes and corrections "
                             "(arXiv 2412.16653).", invoke_without_command=True)


@insec_app.callback()
def insec_command(
    ctx: typer.Context,
    out: Annotated[Path | None, typer.Option(help="Run folder to create (or continue with --resume).")] = None,
    negatives: Annotated[str | None, typer.Option(help="on_policy, synthetic, or none (plain SFT).")] = None,
    granularity: Annotated[str | None, typer.Option(help="step (chain answers) or answer.")] = None,
    mistake_loss: Annotated[str | None, typer.Option("--mistake-loss",
                                                     help="none (default), unlikelihood or full.")] = None,
    iterations: Annotated[int | None, typer.Option(help="Iterations of sample -> build -> train.")] = None,
    model: Annotated[str | None, typer.Option(help="Base model: folder, hub id, or `sandbox`.")] = None,
    task: Annotated[str | None, typer.Option(help="Task name.")] = None,
    seed: SeedOverride = None,
    resume: Resume = False,
    config: ConfigFile = None,
    overrides: Overrides = None,
    quiet: Quiet = False,
) -> None:
    """Run InSeC from a YAML config plus CLI overrides, and print accuracy and marker behaviour per iteration."""
    if ctx.invoked_subcommand is not None:
        return
    from selfcorrect.errors import SelfCorrectError
    from selfcorrect.methods.insec import InSeCConfig, format_iterations, run_insec

    if out is None:
        raise SelfCorrectError("insec needs --out (the run folder)")
    flags = {"negatives": negatives, "granularity": granularity, "mistake_loss": mistake_loss,
             "iterations": iterations, "model": model, "task": task, "seed": seed}
    cfg = config_from_cli(InSeCConfig, config, overrides, flags, resume_from=out if resume else None)
    summary = run_insec(cfg, out, resume=resume, quiet=quiet)
    typer.echo(f"\nInSeC ({cfg.negatives} negatives), {cfg.eval_split} split at T={cfg.eval_temperature:g} "
               "(95% bootstrap intervals):")
    typer.echo(format_iterations(summary))
    typer.echo(f"run folder: {out}")


@insec_app.command("compare")
def compare_command(
    out: Annotated[Path, typer.Option(help="Folder for all runs of the comparison.")],
    seeds: Annotated[str | None, typer.Option(help="Comma-separated seeds (default 0,1,2).")] = None,
    arms: Annotated[str | None, typer.Option(help="Comma-separated arms: insec-on-policy, insec-synthetic, sft "
                                                  "(default all three).")] = None,
    resume: Resume = False,
    config: ConfigFile = None,
    overrides: Overrides = None,
    quiet: Quiet = False,
) -> None:
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
    base = config_from_cli(InSeCConfig, config, overrides, {}, resume_from=saved, section="base")
    chosen = resumed_list(arms, ",".join(ARMS), saved, "arms", "--arms", parse_arms)
    seed_list = resumed_list(seeds, "0,1,2", saved, "seeds", "--seeds", lambda text: parse_ints(text, "--seeds"))
    table = run_compare(base, seed_list, out, chosen, resume=resume, quiet=quiet)
    typer.echo(format_markdown(table))
    typer.echo(f"comparison folder: {out} (compare.md, compare.json, compare.png)")


@insec_app.command("demo-run")
def demo_command(
    out: Annotated[Path, typer.Option(help="Run folder (continued when it exists).")] = Path("runs/demo/insec"),
    seed: Seed = 0,
    quiet: Quiet = False,
) -> None:
    """One short on-policy InSeC round on the sandbox: what `make demo` shows."""
    from selfcorrect.methods.insec_compare import run_insec_demo

    run_insec_demo(out, seed=seed, quiet=quiet)


def register(app: typer.Typer) -> None:
    app.add_typer(insec_app, name="insec")
