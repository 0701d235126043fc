"""Time one STaSC iteration of the default sandbox config, with a breakdown: generation, scoring, fine-tuning.

    python benchmarks/stasc_iteration.py [--config configs/stasc/sandbox.yaml] [--out bench.json]

Runs one iteration (no evaluation) on the cached sandbox model and reports wall-clock seconds per phase. Scoring
happens inside generation (each output is scored as it arrives); it is timed here separately by re-scoring every
output, so the generation figure includes it. Run it alone: two torch processes on 2 cores run ~10x slower.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="configs/stasc/sandbox.yaml")
    parser.add_argument("--out", default=None, help="write the timings as JSON here")
    args = parser.parse_args()

    from selfcorrect.backends.hf import HFBackend
    from selfcorrect.config import load_config
    from selfcorrect.methods.stasc import STaSCConfig, sample_pairs, select_training_set
    from selfcorrect.models import resolve_model
    from selfcorrect.tasks import get_task
    from selfcorrect.training.finetune import finetune

    config = load_config(STaSCConfig, args.config)
    task = get_task(config.task, **config.task_options)
    model_dir = resolve_model(config.model)
    examples = task.examples(config.train_split, config.train_limit)
    times: dict[str, float] = {}

    start = time.perf_counter()
    backend = HFBackend(model=str(model_dir))
    times["load_model_s"] = time.perf_counter() - start

    start = time.perf_counter()
    pairs = sample_pairs(backend, backend, task, examples, config, seed=config.seed)
    times["generation_s (initial answers + corrections, scoring included)"] = time.perf_counter() - start

    start = time.perf_counter()
    for traj in pairs:
        for turn in traj.model_turns():
            task.score(traj.example, turn.text)
    times["scoring_s (re-scored separately)"] = time.perf_counter() - start

    start = time.perf_counter()
    selection = select_training_set(pairs, config, seed=config.seed, budget=None)
    times["selection_s"] = time.perf_counter() - start

    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        result = finetune(model_dir, selection["conversations"], Path(tmp) / "model", config.finetune,
                          loss_on="last_assistant", replay=selection["replay"] or None, quiet=True)
        times["finetune_s"] = time.perf_counter() - start

    total = sum(times.values())
    report = {"config": args.config, "questions": len(examples), "n_init": config.n_init, "n_corr": config.n_corr,
              "generations": len(examples) * config.n_init * (1 + config.n_corr), "kept": selection["n_kept"],
              "finetune_steps": result.steps, "timings": times, "total_s": total,
              "machine": {"cpus": os.cpu_count(), "platform": platform.platform()}}
    for name, seconds in times.items():
        print(f"{name:<66} {seconds:8.1f}")
    print(f"{'total (one iteration, no evaluation)':<66} {total:8.1f}")
    print(f"generations: {report['generations']}, kept pairs: {report['kept']}, fine-tune steps: {result.steps}")
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
