"""Kill a real-model run with SIGKILL, resume it, and check it equals an uninterrupted run (issue 14, item 6).

    python experiments/kill_resume_real.py WORKDIR [--part eval|stasc|both]

Part `eval`: a SmolLM2-135M-Instruct eval on nq-open (12 examples, 1 round, at most 32 new tokens a turn,
chunks of 4, no cache) is SIGKILLed as soon as its first chunk is in samples.jsonl, resumed with `--out A --resume`,
and compared with an uninterrupted run B by `compare_runs.py`. Part `stasc`: a small STaSC run on BBQ (16 train
questions x 1 answer x 2 corrections, Non-Decreasing filter, 1 iteration, 6 LoRA steps) runs uninterrupted first
(B), which says how long its fine-tuning takes; the same run A is then SIGKILLed that long after its trainer
started (the trainer's staging folder `iter-1/.model.partial.partial` appeared) times `--kill-at` (0.4: mid-way
through the optimiser steps), resumed with `--out A --resume` alone, and compared with B: the summary's
per-iteration metrics, selection counts and training loss curve, the generation file, every eval folder (by
`compare_runs.py`) and the fine-tuned weights, byte for byte.
Each command runs as its own process group with OMP_NUM_THREADS=1; the wall time of each is printed.
Exits 1 if any comparison differs, and stops early if B kept no pairs (nothing to fine-tune) or A finished
fine-tuning before the kill.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from compare_runs import differences, trajectories

CLI = [sys.executable, "-m", "selfcorrect.cli"]
EVAL_LIMIT, EVAL_CHUNK = 12, 4
EVAL_FLAGS = ["--model", "smollm2-135m-instruct", "--task", "nq-open", "--limit", str(EVAL_LIMIT), "--rounds", "1",
              "--set", f"chunk_size={EVAL_CHUNK}", "--set", "max_new_tokens=32", "--no-cache", "--quiet"]
STASC_CONFIG = """\
# A STaSC run small enough for a shared CPU that still fine-tunes: BBQ's three options make a sampled answer right
# often enough that the Non-Decreasing filter (ENE) keeps pairs. 16 questions x 1 answer x 2 corrections, 6 LoRA
# steps, 8 eval examples.
variant: ENE
task: bbq
task_options: {splits: {train: 16, validation: 8}}
question_prompt: bbq-question
review_prompt: bbq-review
model: smollm2-135m-instruct
iterations: 1
n_init: 1
n_corr: 2
temperature: 1.0
max_new_tokens: 24
train_limit: 16
eval_limit: 8
eval_splits: [validation]
eval_temperatures: [0.0]
seed: 0
finetune:
  method: lora
  max_steps: 6
  batch_size: 4
  learning_rate: 1.0e-4
"""
SUMMARY_KEYS = ("eval", "selection", "training_steps", "loss_curve")


def environment() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1"}


def run(args: list[str]) -> float:
    """Run one CLI command to the end; its wall seconds."""
    started = time.perf_counter()
    subprocess.run(CLI + args, env=environment(), check=True)
    return time.perf_counter() - started


def run_and_kill(args: list[str], ready: Callable[[], bool], too_late: str = "", delay: float = 0.0) -> float:
    """Start a command and SIGKILL its process group `delay` seconds after `ready()` first holds; its wall seconds
    until the kill."""
    started = time.perf_counter()
    process = subprocess.Popen(CLI + args, env=environment(), start_new_session=True)
    while not ready():
        if process.poll() is not None:
            raise SystemExit(f"the run ended (exit {process.returncode}) before the moment to kill it came{too_late}")
        time.sleep(0.1)
    print(f"  ready after {time.perf_counter() - started:.1f} s; killing {delay:.1f} s later")
    time.sleep(delay)
    if process.poll() is not None:
        raise SystemExit(f"the run ended (exit {process.returncode}) before the moment to kill it came{too_late}")
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    print(f"  killed with SIGKILL after {time.perf_counter() - started:.0f} s (exit {process.returncode})")
    return time.perf_counter() - started


def lines(path: Path) -> int:
    return len(path.read_text().splitlines()) if path.is_file() else 0


def eval_part(work: Path) -> list[str]:
    a, b = work / "eval-A", work / "eval-B"
    print(f"eval: {a} killed after its first chunk, then resumed")
    seconds = run_and_kill(["eval", *EVAL_FLAGS, "--out", str(a)], lambda: lines(a / "samples.jsonl") >= EVAL_CHUNK)
    kept, summary = lines(a / "samples.jsonl"), (a / "summary.json").exists()
    print(f"  kept {kept} of {EVAL_LIMIT} trajectories, summary.json: {summary}")
    seconds += run(["eval", "--out", str(a), "--resume", "--quiet"])  # config.yaml holds the rest, cache: false too
    print(f"  killed + resumed: {seconds:.0f} s")
    print(f"eval: {b} uninterrupted: {run(['eval', *EVAL_FLAGS, '--out', str(b)]):.0f} s")
    found = differences(trajectories(a), trajectories(b), a, b)
    print(f"eval: {a} vs {b}: " + ("; ".join(found) if found else f"identical ({lines(b / 'samples.jsonl')} "
                                                                   "trajectories and summary metrics)"))
    return found


def summary_rows(run_dir: Path) -> list[dict]:
    """Per iteration, what must not depend on an interruption (timings are left out)."""
    rows = json.loads((run_dir / "summary.json").read_text())["iterations"]
    return [{"eval": r["eval"], "selection": r.get("selection"), "training_steps": r.get("training", {}).get("steps"),
             "loss_curve": r.get("training", {}).get("loss_curve")} for r in rows]


def weights(model_dir: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(model_dir.glob("*.safetensors"))}


def stasc_differences(a: Path, b: Path) -> list[str]:
    found = []
    ra, rb = summary_rows(a), summary_rows(b)
    found += [f"summary iteration {i} {key} differs" for i, (x, y) in enumerate(zip(ra, rb, strict=True))
              for key in SUMMARY_KEYS if x[key] != y[key]]
    for name in sorted(p.relative_to(a) for p in a.glob("iter-*/generation.jsonl")):
        if (a / name).read_text() != (b / name).read_text():
            found.append(f"{name} differs")
    for folder in sorted(p.parent.relative_to(a) for p in a.glob("iter-*/eval-*/summary.json")):
        found += [f"{folder}: {d}" for d in differences(trajectories(a / folder), trajectories(b / folder),
                                                         a / folder, b / folder)]
    for model in sorted(p.relative_to(a) for p in a.glob("iter-*/model")):
        if not weights(a / model) or weights(a / model) != weights(b / model):
            found.append(f"{model} weights differ (or none saved)")
    return found


def stasc_part(work: Path, kill_at: float) -> list[str]:
    config = work / "stasc-small.yaml"
    config.write_text(STASC_CONFIG)
    a, b = work / "stasc-A", work / "stasc-B"
    print(f"stasc: {b} uninterrupted: {run(['stasc', '--config', str(config), '--out', str(b), '--quiet']):.0f} s")
    selection = json.loads((b / "iter-1" / "selection.json").read_text())
    if not selection["n_used"]:
        raise SystemExit(f"{b} kept no pairs ({selection}): there is no fine-tuning to interrupt")
    training = json.loads((b / "iter-1" / "model" / "finetune.json").read_text())
    print(f"  kept {selection['n_kept']} pairs ({selection['kept']}); fine-tuning: {training['steps']} steps, "
          f"{training['seconds']:.1f} s with loading")
    print(f"stasc: {a} killed while fine-tuning, then resumed")
    staging = a / "iter-1" / ".model.partial.partial"  # made by the trainer (its output_dir) just before training
    seconds = run_and_kill(["stasc", "--config", str(config), "--out", str(a), "--quiet"], staging.is_dir,
                           delay=kill_at * training["seconds"])
    on_disk = sorted(str(p.relative_to(a)) for p in a.glob("iter-1/*"))
    print(f"  on disk at the kill: {on_disk}")
    if (a / "iter-1" / "model").exists():
        raise SystemExit("the kill came after fine-tuning had finished; lower --kill-at")
    seconds += run(["stasc", "--out", str(a), "--resume", "--quiet"])
    print(f"  killed + resumed: {seconds:.0f} s")
    found = stasc_differences(a, b)
    print(f"stasc: {a} vs {b}: " + ("; ".join(found) if found else
                                    "identical (summary metrics, selection, loss curve; generation; eval folders; "
                                    "fine-tuned weights)"))
    return found


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("workdir", type=Path, help="empty or new folder for the four runs")
    parser.add_argument("--part", choices=("eval", "stasc", "both"), default="both")
    parser.add_argument("--kill-at", type=float, default=0.4,
                        help="stasc: kill this fraction of the uninterrupted run's fine-tuning seconds after its "
                             "trainer started")
    args = parser.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    found = []
    if args.part in ("eval", "both"):
        found += eval_part(args.workdir)
    if args.part in ("stasc", "both"):
        found += stasc_part(args.workdir, args.kill_at)
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
