"""Commands that read or rank with inference-time results: `select`, `probe`, `report`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from selfcorrect.commands.common import ConfigFile, Overrides, Quiet, SeedOverride, config_from_cli


def select_command(
    corpus: Annotated[str | None, typer.Option(help="JSONL corpus to rank.")] = None,
    out: Annotated[Path | None, typer.Option(help="JSONL file for the chosen records.")] = None,
    prompt: Annotated[str | None, typer.Option(help="Prompt name over the record's keys, e.g. "
                                                    "select-bias-question.")] = None,
    model: Annotated[str | None, typer.Option(help="Built-in model (`selfcorrect models`), folder or hub id.")] = None,
    backend: Annotated[str | None, typer.Option(help="Backend: hf, openai, vllm, scripted.")] = None,
    samples: Annotated[int | None, typer.Option(help="Answers sampled per record.")] = None,
    measure: Annotated[str | None, typer.Option(help="answer_entropy or mean_nll.")] = None,
    keep: Annotated[float | None, typer.Option(help="Fraction (<= 1) or number of records to keep.")] = None,
    which: Annotated[str | None, typer.Option(help="most or least uncertain.")] = None,
    seed: SeedOverride = None,
    config: ConfigFile = None,
    overrides: Overrides = None,
    quiet: Quiet = False,
) -> None:
    """Rank a JSONL corpus by the model's uncertainty; write the most (or least) uncertain records."""
    from selfcorrect.errors import SelfCorrectError
    from selfcorrect.select import SelectConfig, run_select

    if out is None:
        raise SelfCorrectError("select needs --out (the JSONL file to write)")
    flags = {"corpus": corpus, "prompt": prompt, "model": model, "backend": backend, "samples": samples,
             "measure": measure, "keep": keep, "which": which, "seed": seed}
    cfg = config_from_cli(SelectConfig, config, overrides, flags)
    report = run_select(cfg, out, quiet=quiet)
    typer.echo(f"kept {report['n_kept']} of {report['n_records']} records ({cfg.which} uncertain by {cfg.measure}); "
               f"mean score kept {report['mean_score_kept']:.3f}, all {report['mean_score_all']:.3f}")
    typer.echo(f"wrote {out} and {out.name}.scores.json")


def probe_command(
    run_dir: Annotated[Path, typer.Argument(help="Eval run folder with hidden states (eval --hidden-layer).")],
    train_run: Annotated[Path | None, typer.Option(help="Train the probe on this run's rounds instead of a "
                                                        "seeded half of RUN_DIR's examples.")] = None,
    l2: Annotated[float, typer.Option(help="L2 penalty of the logistic-regression probe.")] = 1e-2,
    seed: Annotated[int, typer.Option(help="Seed of the example split and the bootstrap.")] = 0,
) -> None:
    """Probe "the answer in context is wrong" in stored hidden states: held-out AUROC, activation by round."""
    from selfcorrect.analysis.probes import ProbeConfig, probe_run

    result = probe_run(run_dir, train_run, ProbeConfig(l2=l2, seed=seed))
    auc = result["held_out_auroc"]
    typer.echo(f"probe '{result['concept']}' at layer {result['layer']}: held-out AUROC {auc['value']:.3f} "
               f"[{auc['ci'][0]:.3f}, {auc['ci'][1]:.3f}] ({auc['n_rows']} rows, {auc['n_examples']} examples, "
               f"positive rate {auc['positive_rate']:.3f}); train AUROC {result['train_auroc']:.3f}")
    baseline = result["nll_baseline_auroc"]
    if baseline is not None:
        typer.echo(f"baseline without hidden states (mean NLL of the answer in context): AUROC "
                   f"{baseline['value']:.3f} [{baseline['ci'][0]:.3f}, {baseline['ci'][1]:.3f}]")
    for row in result["activation_by_round"]:
        typer.echo(f"round {row['round']}: mean score {row['mean_score']:.3f}, mean cosine {row['mean_cosine']:+.3f}")
    for name, corr in result["correlation"].items():
        typer.echo(f"{name}: r = {corr['r']:+.3f}, p = {corr['p']:.3g} (n = {corr['n']})")
    typer.echo(f"wrote {run_dir / 'probe.json'}")


def report_command(
    runs: Annotated[list[Path], typer.Argument(help="Finished run folders of eval, stasc or insec.")],
    out: Annotated[Path | None, typer.Option(help="With several runs: the comparison page to write (.html).")] = None,
) -> None:
    """One run: its figures and page (RUN/report/). Several: one page, method against method, with --out."""
    from selfcorrect.errors import SelfCorrectError

    if len(runs) == 1 and out is None:
        from selfcorrect.report import build_report

        typer.echo(f"report: {build_report(runs[0])}")
        return
    if out is None:
        raise SelfCorrectError("report: several runs need --out PAGE.html for the comparison page")
    from selfcorrect.comparison import build_comparison

    typer.echo(f"report: {build_comparison(runs, out)}")


def register(app: typer.Typer) -> None:
    app.command("select")(select_command)
    app.command("probe")(probe_command)
    app.command("report")(report_command)
