"""What an InSeC round costs on this machine: time per step of the round, and training throughput.

    python benchmarks/insec.py                                   # the sandbox config, on-policy, 2 iterations
    python benchmarks/insec.py --negatives synthetic --iterations 1
    python benchmarks/insec.py --set finetune.epochs=4 --out benchmarks/results/insec.json

Runs `run_insec` in a temporary folder and reads its timings: sampling (on-policy only: n samples per training
question in one backend call), fine-tuning (loading, tokenizing and training; not the final save) and evaluation
(one call over the eval split), per round. Training throughput is the round's non-padding tokens times the epochs
over the fine-tuning seconds: padding is excluded because it depends on how batches happen to be drawn. On a
machine shared with other jobs these numbers move with the neighbours' load; the JSON records the environment.
"""

from __future__ import annotations

import argparse
import json
import math
import tempfile
from pathlib import Path

from selfcorrect.config import load_config, parse_overrides
from selfcorrect.methods.insec import InSeCConfig, run_insec
from selfcorrect.runs import environment_info, write_json

ROOT = Path(__file__).resolve().parents[1]


def training_tokens(run: Path, round_index: int) -> tuple[int, int]:
    """(non-padding tokens, trained tokens) of one round's training set, tokenized as `finetune` tokenizes it."""
    from transformers import AutoTokenizer

    from selfcorrect.training.finetune import tokenize_dataset

    model_dir = run / f"iter-{round_index}" / "model"
    data = json.loads((run / f"iter-{round_index}" / "data.json").read_text())
    records = tokenize_dataset(AutoTokenizer.from_pretrained(model_dir), data["conversations"], "spans")
    return (sum(len(r["input_ids"]) for r in records),
            sum(sum(label != -100 for label in r["labels"]) for r in records))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, default=ROOT / "configs" / "insec" / "sandbox.yaml")
    parser.add_argument("--negatives", default="on_policy", choices=["on_policy", "synthetic", "none"])
    parser.add_argument("--iterations", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    parser.add_argument("--out", type=Path, help="Write the results as JSON here.")
    args = parser.parse_args()

    import torch

    overrides = {"negatives": args.negatives, "iterations": args.iterations, "seed": args.seed,
                 **parse_overrides(args.overrides)}
    config = load_config(InSeCConfig, args.config, overrides)
    with tempfile.TemporaryDirectory(prefix="insec-bench-") as tmp:
        run = Path(tmp) / "run"
        summary = run_insec(config, run, quiet=True)
        timings = summary["timings"]
        rows = []
        for row in summary["iterations"][1:]:
            r = row["iteration"]
            tokens, trained = training_tokens(run, r)
            epochs = row["training"]["steps"] / math.ceil(row["data"]["sequences"] / config.finetune.batch_size)
            seconds = {step: timings[f"iter-{r}/{step}_s"] for step in ("sampling", "finetune", "eval")}
            rows.append({"round": r, **seconds, "round_s": sum(seconds.values()), "steps": row["training"]["steps"],
                         "steps_per_s": row["training"]["steps"] / seconds["finetune"],
                         "tokens_per_s": tokens * epochs / seconds["finetune"],
                         "trained_tokens_per_s": trained * epochs / seconds["finetune"],
                         "sequences": row["data"]["sequences"], "accuracy": row["eval"]["accuracy"]["value"]})
    result = {"config": config.model_dump(), "torch_threads": torch.get_num_threads(),
              "base_eval_s": timings["iter-0/eval_s"], "rounds": rows, "environment": environment_info()}
    print(f"{'round':>5} {'sampling s':>10} {'finetune s':>10} {'eval s':>7} {'round s':>8} {'steps':>6} "
          f"{'steps/s':>8} {'tok/s':>8} {'trained tok/s':>13} {'accuracy':>8}")
    for row in rows:
        print(f"{row['round']:>5} {row['sampling']:>10.1f} {row['finetune']:>10.1f} {row['eval']:>7.1f} "
              f"{row['round_s']:>8.1f} {row['steps']:>6} {row['steps_per_s']:>8.2f} {row['tokens_per_s']:>8.0f} "
              f"{row['trained_tokens_per_s']:>13.0f} {row['accuracy']:>8.3f}")
    if args.out:
        write_json(args.out, result)
        print(f"written: {args.out}")


if __name__ == "__main__":
    main()
