"""`selfcorrect eval`: multi-round self-correction on any task and backend (intrinsic, cac, self-refine-style)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from selfcorrect.commands.common import config_from_cli
from selfcorrect.commands.options import (
    Backend,
    BaseUrl,
    Cache,
    CheckPrompt,
    ConfigFile,
    CriticNoise,
    HiddenLayer,
    HiddenSpan,
    Limit,
    Method,
    Model,
    NliModel,
    Out,
    Overrides,
    PromptsFile,
    QuestionPrompt,
    Quiet,
    Resume,
    ReviewPrompt,
    Rounds,
    Samples,
    Seed,
    Split,
    Stop,
    Task,
    Temperature,
)


def eval_command(ctx: typer.Context, out: Out, task: Task = None, model: Model = None, backend: Backend = None,
                 base_url: BaseUrl = None, method: Method = None, rounds: Rounds = None, limit: Limit = None,
                 split: Split = None, temperature: Temperature = None, seed: Seed = None, samples: Samples = None,
                 nli_model: NliModel = None, stop: Stop = None, question_prompt: QuestionPrompt = None,
                 review_prompt: ReviewPrompt = None, check_prompt: CheckPrompt = None,
                 prompts_file: PromptsFile = None, critic_noise: CriticNoise = None, hidden_layer: HiddenLayer = None,
                 hidden_span: HiddenSpan = None, cache: Cache = None, resume: Resume = False,
                 config: ConfigFile = None, overrides: Overrides = None, quiet: Quiet = False) -> None:
    """First answer plus N rounds of self-correction; prints accuracy by round with 95% intervals."""
    from selfcorrect.methods.evaluate import EvalConfig, run_eval

    cfg = config_from_cli(EvalConfig, ctx, resume_from=out if resume else None)
    summary = run_eval(cfg, out, resume=resume, quiet=quiet)
    _print_summary(summary, out)


def _print_summary(summary: dict[str, Any], out: Path) -> None:
    from selfcorrect.analysis.metrics import format_table

    stopping = summary.get("stopping", {})
    if stopping.get("label"):
        typer.echo(f"ORACLE RUN -- {stopping['label']}")
    typer.echo(format_table(summary["metrics"]))
    if len(summary["metrics"]["accuracy_by_round"]) > 2 or summary.get("uncertainty"):
        typer.echo(round_table(summary))
    if summary.get("convergence"):
        found = summary["convergence"]["round"]
        typer.echo(f"convergence round: {found or 'none (accuracy still moving at the last round)'}; stop rounds: "
                   f"{stopping.get('stop_round_histogram')}")
    checks = summary.get("checks")
    if checks and checks["accuracy"] is not None:
        gain = checks["gain"]
        typer.echo(f"check accuracy ({checks['source']}): {checks['accuracy']:.3f} (parsed {checks['parse_rate']:.3f})"
                   f"; gain acc@t{gain['to_round']} - acc@t1: {gain['value']:+.3f} "
                   f"[{gain['ci'][0]:+.3f}, {gain['ci'][1]:+.3f}]")
    if summary.get("lucky_hit_rate_t1") is not None:
        typer.echo(f"lucky-hit rate at t1 (wrong traces whose final digit is right; exact-trace reward gives them 0): "
                   f"{summary['lucky_hit_rate_t1']:.3f}")
    typer.echo(f"run folder: {out}")


def _cell(value: float | None, width: int = 7) -> str:
    return f"{value:>{width}.3f}" if value is not None else f"{'-':>{width}}"


def round_table(summary: dict[str, Any]) -> str:
    """Per round: accuracy [95% CI], flips from the previous round, and the uncertainty measures of summary.json."""
    flips = {b["to"]: b for b in summary["metrics"]["transitions"]}
    unc = {r["round"]: r for r in summary.get("uncertainty", {}).get("by_round", [])}
    lines = ["round  acc   [95% CI]         I->C    C->I  meanNLL  tokEnt  ansEnt     ECE"]
    for row in summary["metrics"]["accuracy_by_round"]:
        t, u, f = row["round"], unc.get(row["round"], {}), flips.get(row["round"], {})
        lines.append(f"{t:>5}  {row['value']:.3f} [{row['ci'][0]:.3f}, {row['ci'][1]:.3f}]"
                     f"{_cell(f.get('i_to_c'))} {_cell(f.get('c_to_i'))}  {_cell(u.get('mean_nll'))} "
                     f"{_cell(u.get('mean_entropy'))} {_cell(u.get('answer_entropy'))} "
                     f"{_cell((u.get('option') or {}).get('ece'))}")
    return "\n".join(lines)


def register(app: typer.Typer) -> None:
    app.command("eval")(eval_command)
