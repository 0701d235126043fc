"""`make demo`: the sandbox end to end, then a real model. Pretrain (or load the cached) sandbox model, let it answer
the test split and correct itself once, and print what happened with intervals; then the built-in SmolLM2-135M-
Instruct answers a few dozen NQ-open questions and reviews its answers once.

The sandbox is reported at temperature 1: its imperfection is the noisy writer's per-step slip rate, which greedy
decoding removes (see tasks/sandbox_chain.py), so greedy numbers on the default task are at ceiling by design.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

import typer


def run_demo(out: Path, seed: int = 0, quiet: bool = False) -> dict[str, Any]:
    from selfcorrect.analysis.metrics import format_table
    from selfcorrect.methods.evaluate import EvalConfig, run_eval
    from selfcorrect.sandbox.cache import ensure_sandbox
    from selfcorrect.sandbox.pretrain import load_report

    model_dir = ensure_sandbox(quiet=quiet)
    report = load_report(model_dir)
    timings = report["timings"]
    typer.echo(f"sandbox model: {model_dir} ({report['parameters']:,} parameters, pretrained in "
               f"{sum(timings.values()):.0f} s; final loss {report['loss_curve'][-1]['loss']:.4f})")

    run_dir = out / datetime.now().strftime("%Y%m%d-%H%M%S") / "eval"
    config = EvalConfig(task="sandbox-chain", model=str(model_dir), rounds=1, temperature=1.0, seed=seed,
                        cache=False)
    summary = run_eval(config, run_dir, quiet=quiet)
    metrics = summary["metrics"]
    typer.echo("\nSandbox test split, one correction round, temperature 1, exact-trace reward:")
    typer.echo(format_table(metrics))
    counts = metrics["transitions"][0]["counts"]
    wrong = counts["I->C"] + counts["I->I"]
    if wrong:
        typer.echo(f"corrections fixed {counts['I->C']} of {wrong} wrong first attempts "
                   f"({counts['I->C'] / wrong:.1%}); broke {counts['C->I']} of {counts['C->C'] + counts['C->I']} "
                   "right ones")
    if summary.get("lucky_hit_rate_t1") is not None:
        typer.echo(f"lucky-hit rate at t1: {summary['lucky_hit_rate_t1']:.3f} of wrong traces end on the right digit "
                   "(a final-digit reward would count them; the exact-trace reward does not)")
    typer.echo(f"run folder: {run_dir}")
    stasc = run_demo_stasc(run_dir.parent / "stasc", model_dir, seed, quiet)
    from selfcorrect.methods.insec_compare import run_insec_demo

    typer.echo("\nInSeC (on-policy negatives, inline <fix> marker) against plain SFT at the same optimiser steps:")
    insec = run_insec_demo(run_dir.parent / "insec", seed=seed, quiet=quiet)
    real = run_demo_real(run_dir.parent / "smollm2", seed, quiet)
    return {"eval": summary, "stasc": stasc, "insec": insec, "real": real}


def run_demo_real(out: Path, seed: int, quiet: bool, questions: int = 30) -> dict[str, Any]:
    """A real model, briefly: SmolLM2-135M-Instruct (converted from its GGUF file on first use) answers the first
    `questions` NQ-open questions greedily, then reviews its answer once; the per-round table, read as it is."""
    from selfcorrect.analysis.metrics import format_table
    from selfcorrect.methods.evaluate import EvalConfig, run_eval
    from selfcorrect.models import SMOLLM2

    config = EvalConfig(task="nq-open", model=SMOLLM2, rounds=1, limit=questions, temperature=0.0,
                        max_new_tokens=32, seed=seed, cache=False)
    summary = run_eval(config, out, quiet=quiet)
    metrics = summary["metrics"]
    typer.echo(f"\n{SMOLLM2} ({summary['backend']['dtype']}), first {questions} NQ-open questions, greedy, one review "
               "round, answer counted right if it contains a gold alias:")
    typer.echo(format_table(metrics))
    from selfcorrect.runs import RunFolder

    trajectories = RunFolder(out).read_samples()
    same = sum(1 for t in trajectories if len(t.model_turns()) > 1
               and t.model_turns()[0].text.strip() == t.model_turns()[1].text.strip())
    entropy = [r.get("mean_entropy") for r in summary["uncertainty"]["by_round"]]
    typer.echo(f"asked to review, it repeated {same} of {len(trajectories)} answers word for word; mean token "
               f"entropy by round: {', '.join(f'{e:.2f}' for e in entropy if e is not None)}")
    typer.echo(f"run folder: {out}")
    return summary


def run_demo_stasc(out: Path, model_dir: Path, seed: int, quiet: bool) -> dict[str, Any]:
    """A short STaSC run (EIE, one iteration on 500 training questions): acc@t1 and acc@t2 per iteration.

    The full recipe (configs/stasc/sandbox.yaml, 3 iterations on 1,000 questions) takes a few minutes; this keeps
    the cached demo near two minutes. Like that recipe it replays the pretraining distribution (see docs/stasc.md).
    """
    from selfcorrect.methods.stasc import STaSCConfig, iteration_table, run_stasc

    config = STaSCConfig(model=str(model_dir), iterations=1, n_init=2, n_corr=4, train_limit=500,
                         eval_temperatures=[1.0], replay_share=0.5, replay_source="pretraining", seed=seed)
    summary = run_stasc(config, out, quiet=quiet)
    typer.echo("\nSTaSC (EIE, 1 iteration, 500 training questions, N_init=2, N_corr=4), test split, temperature 1:")
    typer.echo(iteration_table(summary, "test@T1"))
    typer.echo(f"run folder: {out}")
    return summary
