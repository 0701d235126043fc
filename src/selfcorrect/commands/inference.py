"""Commands that read or rank with inference-time results: `select`, `probe`, `report`."""

from __future__ import annotations

import typer

from selfcorrect.commands.common import config_from_cli
from selfcorrect.commands.options import (
    Backend,
    BaseUrl,
    Concept,
    ConfigFile,
    Corpus,
    Keep,
    L2Penalty,
    Limit,
    Measure,
    Model,
    Out,
    Overrides,
    Prompt,
    PromptsFile,
    Quiet,
    RunDir,
    RunDirs,
    Samples,
    Seed,
    Temperature,
    TrainRun,
    Which,
)


def select_command(ctx: typer.Context, out: Out, corpus: Corpus = None, prompt: Prompt = None,
                   prompts_file: PromptsFile = None, model: Model = None, backend: Backend = None,
                   base_url: BaseUrl = None, samples: Samples = None, temperature: Temperature = None,
                   limit: Limit = None, measure: Measure = None, keep: Keep = None, which: Which = None,
                   seed: Seed = None, config: ConfigFile = None, overrides: Overrides = None,
                   quiet: Quiet = False) -> None:
    """Rank a JSONL corpus by the model's uncertainty; write the most (or least) uncertain records."""
    from selfcorrect.select import SelectConfig, run_select

    cfg = config_from_cli(SelectConfig, ctx)
    report = run_select(cfg, out, quiet=quiet)
    typer.echo(f"kept {report['n_kept']} of {report['n_records']} records ({cfg.which} uncertain by {cfg.measure}); "
               f"mean score kept {report['mean_score_kept']:.3f}, all {report['mean_score_all']:.3f}")
    typer.echo(f"wrote {out} and {out.name}.scores.json")


def probe_command(ctx: typer.Context, run_dir: RunDir, train_run: TrainRun = None, concept: Concept = None,
                  l2: L2Penalty = None, seed: Seed = None, config: ConfigFile = None,
                  overrides: Overrides = None) -> None:
    """Probe a concept of the answer in context ("it is wrong"; on BBQ "it is the stereotyped one") in the hidden
    states an eval run stored (eval --hidden-layer): held-out AUROC beside two controls, activation by round. The
    seed draws the example split and the bootstrap."""
    from selfcorrect.analysis.probes import ProbeConfig, probe_run

    result = probe_run(run_dir, train_run, config_from_cli(ProbeConfig, ctx))
    auc = result["held_out_auroc"]
    typer.echo(f"probe '{result['concept']}' at layer {result['layer']}: held-out AUROC {auc['value']:.3f} "
               f"[{auc['ci'][0]:.3f}, {auc['ci'][1]:.3f}] ({auc['n_rows']} rows, {auc['n_examples']} examples, "
               f"positive rate {auc['positive_rate']:.3f}); train AUROC {result['train_auroc']:.3f}")
    baseline = result["nll_baseline_auroc"]
    if baseline is not None:
        typer.echo(f"baseline without hidden states (mean NLL of the answer in context): AUROC "
                   f"{baseline['value']:.3f} [{baseline['ci'][0]:.3f}, {baseline['ci'][1]:.3f}]")
    control = result["question_only_auroc"]
    if control is not None:
        gap = control["probe_minus_control"]
        typer.echo(f"control, the question alone (each row's round-1 state): AUROC {control['value']:.3f} "
                   f"[{control['ci'][0]:.3f}, {control['ci'][1]:.3f}]; probe minus control {gap['value']:+.3f} "
                   f"[{gap['ci'][0]:+.3f}, {gap['ci'][1]:+.3f}]")
    for row in result["activation_by_round"]:
        typer.echo(f"round {row['round']}: mean score {row['mean_score']:.3f}, mean cosine {row['mean_cosine']:+.3f}")
    for name, corr in result["correlation"].items():
        typer.echo(f"{name}: r = {corr['r']:+.3f}, p = {corr['p']:.3g} (n = {corr['n']})")
    typer.echo(f"wrote {run_dir / 'probe.json'}")


def report_command(runs: RunDirs, out: Out = None) -> None:
    """From saved results alone. One run: its figures and page (RUN/report/index.html). Several runs, or --out:
    one page with them side by side, method against method (the page --out names); the table is also printed,
    as markdown."""
    from selfcorrect.errors import SelfCorrectError

    if len(runs) == 1 and out is None:
        from selfcorrect.report import build_report

        typer.echo(f"report: {build_report(runs[0])}")
        return
    if out is None:
        raise SelfCorrectError("report: several runs need --out PAGE.html, the comparison page to write")
    from selfcorrect.comparison import build_comparison, comparison_markdown

    page = build_comparison(runs, out)
    typer.echo(comparison_markdown(runs))
    typer.echo(f"report: {page}")


def register(app: typer.Typer) -> None:
    app.command("select")(select_command)
    app.command("probe")(probe_command)
    app.command("report")(report_command)
