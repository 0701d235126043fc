"""Training speed of the in-context alignment lab, and what a full sweep of a preset costs on this machine.

    python benchmarks/icalign.py                          # cpu preset: every model of its sweep
    python benchmarks/icalign.py --presets paper --models base --steps 3
    python benchmarks/icalign.py --threads 2 --out benchmarks/results/icalign-2threads.json

For each preset it times `--repeats` blocks of `--steps` training steps (fresh batch, forward, backward, Adam: the
exact step of `icalign train`) after `--warmup` untimed ones, and takes the median block, for the base model or
for every distinct model of the preset's sweep, and one evaluation of the base model (TF and the GD reference at
every noise rate). The sweep estimate is

    Σ_models  seeds × steps / (steps per second)   +   models × seeds × (one evaluation)

which is exact for a sequential sweep up to the time spent writing checkpoints. It is given twice: at the median
block rates (what a machine shared with other jobs gives) and at the best block rates (closest to an idle machine).
Prints a table, writes JSON.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from pathlib import Path

import torch

from selfcorrect.icalign.evaluate import evaluate_model
from selfcorrect.icalign.presets import RunConfig, sweep_config
from selfcorrect.icalign.sweep import panels, run_name
from selfcorrect.icalign.train import build_model, train_step
from selfcorrect.runs import environment_info, write_json


def steps_per_second(config: RunConfig, steps: int, warmup: int, repeats: int) -> list[float]:
    """Rates of `repeats` blocks of `steps` steps: on a shared machine one block can be slowed by a neighbour, so the
    median (used for the estimate) and the spread are reported, not one number."""
    torch.manual_seed(0)
    model = build_model(config)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.train.lr)
    data = torch.Generator().manual_seed(0)
    for _ in range(warmup):
        train_step(model, optimizer, config, data)
    rates = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(steps):
            train_step(model, optimizer, config, data)
        rates.append(steps / (time.perf_counter() - start))
    return rates


def benchmark_preset(preset: str, all_models: bool, steps: int, warmup: int, repeats: int) -> dict:
    sweep = sweep_config(preset)
    base = RunConfig.model_validate(sweep.model_dump(exclude={"sweep"}))
    models = {run_name(sweep.model): sweep.model}
    if all_models:
        for entries in panels(sweep).values():
            models.update((run_name(m), m) for _, m in entries)
    rows = []
    for name, model in models.items():
        config = base.model_copy(update={"model": model})
        rates = steps_per_second(config, steps, warmup, repeats)
        rate = statistics.median(rates)
        rows.append({"model": name, "params": build_model(config).num_params(), "steps_per_s": rate,
                     "steps_per_s_blocks": rates, "minutes_per_run": sweep.train.steps / rate / 60})
        print(f"{preset:6s} {name:26s} {rows[-1]['params']:>9,d} params  {rate:7.2f} steps/s "
              f"({min(rates):.2f}-{max(rates):.2f})  {rows[-1]['minutes_per_run']:6.1f} min per "
              f"{sweep.train.steps}-step run", flush=True)
    start = time.perf_counter()
    evaluate_model(build_model(base).eval(), base)
    eval_s = time.perf_counter() - start
    result = {"preset": preset, "batch_size": sweep.train.batch_size, "steps": sweep.train.steps,
              "seeds": sweep.sweep.seeds, "eval_seconds": eval_s, "models": rows}
    if all_models:
        seeds = len(sweep.sweep.seeds)
        for key, pick in (("median", statistics.median), ("best", max)):
            minutes = sum(sweep.train.steps / pick(r["steps_per_s_blocks"]) / 60 for r in rows) * seeds
            result[f"sweep_estimate_minutes_{key}"] = minutes + len(rows) * seeds * eval_s / 60
        print(f"{preset:6s} one evaluation {eval_s:.1f} s; full sweep ({len(rows)} models × {seeds} seeds, "
              f"sequential): about {result['sweep_estimate_minutes_median']:.0f} min at the median rates, "
              f"{result['sweep_estimate_minutes_best']:.0f} min at the best blocks' rates")
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--presets", default="cpu", help="comma-separated presets (cpu, paper)")
    parser.add_argument("--models", choices=("base", "sweep"), default="sweep",
                        help="time the base model only, or every distinct model of the sweep (gives the estimate)")
    parser.add_argument("--steps", type=int, default=20, help="steps per timed block")
    parser.add_argument("--repeats", type=int, default=5, help="timed blocks per model")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (the machine is shared: 1 by default)")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/icalign.json"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    results = [benchmark_preset(p.strip(), args.models == "sweep", args.steps, args.warmup, args.repeats)
               for p in args.presets.split(",")]
    write_json(args.out, {"threads": args.threads, "processor": platform.processor() or platform.machine(),
                          "cpus": os.cpu_count(), "results": results, "environment": environment_info()})
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
