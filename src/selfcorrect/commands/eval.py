"""`selfcorrect eval`: multi-round self-correction on any task and backend (intrinsic, cac, self-refine-style)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from selfcorrect.commands.common import ConfigFile, Overrides, Quiet, Resume, SeedOverride, config_from_cli


def eval_command(
    out: Annotated[Path, typer.Option(help="Run folder to create (or continue with --resume).")],
    task: Annotated[str | None, typer.Option(help="Task name (see `selfcorrect tasks`).")] = None,
    model: Annotated[str | None, typer.Option(help="Built-in model (`selfcorrect models`), folder or hub id.")] = None,
    backend: Annotated[str | None, typer.Option(help="Backend: hf, openai, vllm, scripted.")] = None,
    method: Annotated[str | None, typer.Option(help="intrinsic (default), cac or self-refine-style.")] = None,
    rounds: Annotated[int | None, typer.Option(help="Review rounds (or check/answer rounds) after the first "
                                                    "answer.")] = None,
    limit: Annotated[int | None, typer.Option(help="Only the first N examples of the split.")] = None,
    split: Annotated[str | None, typer.Option(help="train, validation or test.")] = None,
    temperature: Annotated[float | None, typer.Option(help="0 = greedy.")] = None,
    seed: SeedOverride = None,
    samples: Annotated[int | None, typer.Option(help="Extra samples per answer, for answer entropy.")] = None,
    nli_model: Annotated[str | None, typer.Option(help="Group free-text samples by meaning with this NLI model "
                                                        "(folder or hub id) for answer entropy.")] = None,
    stop: Annotated[str | None, typer.Option(help="Stop rule: fixed, converged or oracle (an upper bound).")] = None,
    question_prompt: Annotated[str | None, typer.Option(help="Round-1 prompt name, e.g. bbq-question.")] = None,
    review_prompt: Annotated[str | None, typer.Option(help="Review prompt name (intrinsic).")] = None,
    check_prompt: Annotated[str | None, typer.Option(help="Check prompt name (cac, self-refine-style).")] = None,
    prompts_file: Annotated[str | None, typer.Option(help="YAML of your own `name: template` prompts.")] = None,
    critic_noise: Annotated[float | None, typer.Option(help="cac control: inject verdicts, inverted with this "
                                                            "probability, instead of self-checks.")] = None,
    hidden_layer: Annotated[int | None, typer.Option(help="Store this layer's hidden states (hf backend; -1 = "
                                                          "last) for `selfcorrect probe`.")] = None,
    hidden_span: Annotated[int | None, typer.Option(help="Average the stored hidden states over the last K prompt "
                                                         "tokens (default 1: the last token).")] = None,
    base_url: Annotated[str | None, typer.Option(help="OpenAI-compatible server, e.g. http://127.0.0.1:8000/v1 "
                                                      "(with --backend openai).")] = None,
    no_cache: Annotated[bool, typer.Option("--no-cache", help="Do not use the generation cache "
                                                                "(saved with the run).")] = False,
    resume: Resume = False,
    config: ConfigFile = None,
    overrides: Overrides = None,
    quiet: Quiet = False,
) -> None:
    """First answer plus N rounds of self-correction; prints accuracy by round with 95% intervals."""
    from selfcorrect.methods.evaluate import EvalConfig, run_eval

    flags = {"task": task, "model": model, "backend": backend, "method": method, "rounds": rounds, "limit": limit,
             "split": split, "temperature": temperature, "seed": seed, "samples": samples, "nli_model": nli_model,
             "stop": stop, "question_prompt": question_prompt, "review_prompt": review_prompt,
             "check_prompt": check_prompt, "prompts_file": prompts_file, "critic_noise": critic_noise,
             "hidden_layer": hidden_layer, "hidden_span": hidden_span, "cache": False if no_cache else None,
             "backend_options": {"base_url": base_url} if base_url else None}
    cfg = config_from_cli(EvalConfig, config, overrides, flags, resume_from=out if resume else None)
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
