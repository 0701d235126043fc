"""The `hf` backend on a real model and a realistic workload, against `model.generate`; and a BBQ eval's cost.

    python benchmarks/generation_real.py [--batches 1,64,256] [--modes greedy,sampled] [--bbq]
                                         [--out benchmarks/results/generation-real.json]

Generation: SmolLM2-135M-Instruct (`smollm2-135m-instruct`, built in), GSM8K test questions through the chat
template, end-of-sequence on, at most 256 new tokens, greedy or T=0.7 / top-p 0.9. "Batch 1" is 4 questions sent
one at a time; batch B is the first B questions in one call. Useful tokens are those up to and including each row's
end-of-sequence token, counted the same way for both loops (`generate` keeps decoding finished rows; those tokens do
not count). Each configuration runs once, in a fresh process, after a short warm-up, so peak RSS
(`ru_maxrss`) is that configuration's own. The backend runs in `dtype="auto"` (bfloat16 where the CPU computes it
natively, else float32); `generate` runs in the same dtype and, when that is not float32, in float32 as well.

`--bbq`: `selfcorrect eval` on the first 150 questions of BBQ's Age.jsonl (`--question-prompt bbq-question`, at most
64 new tokens, greedy, option confidence on, 2 review rounds), its wall time and the peak RSS of its process.

The JSON keeps every configuration and, for batch 64 greedy, `ratio_same_dtype` and `ratio_vs_fp32_generate`, plus
the CPU's flags that decide the dtype. Run one benchmark at a time: two torch jobs on 2 cores thrash.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

MODEL = "smollm2-135m-instruct"
NEW_TOKENS = 256
SAMPLED = {"temperature": 0.7, "top_p": 0.9}
ROOT = Path(__file__).resolve().parent.parent


def _questions(count: int) -> list[str]:
    from selfcorrect.tasks import get_task

    task = get_task("gsm8k")
    return [ex.fields["question"] for ex in task.examples("test", limit=count)]


def _peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def worker(impl: str, batch: int, mode: str) -> dict[str, Any]:
    """One configuration in this process."""
    import torch

    from selfcorrect.backends.base import GenerationRequest, SamplingParams
    from selfcorrect.backends.hf import HFBackend

    backend = HFBackend(MODEL, dtype="float32" if impl == "generate-fp32" else "auto")
    messages = [[{"role": "user", "content": q}] for q in _questions(max(batch, 4))]
    groups = [[m] for m in messages[:4]] if batch == 1 else [messages[:batch]]
    sampling = SAMPLED if mode == "sampled" else {}
    eos = set(backend.eos_ids)

    def run_backend(group: list) -> int:
        params = SamplingParams(max_new_tokens=NEW_TOKENS, seed=0, **sampling)
        gens = backend.generate([GenerationRequest(params, messages=m) for m in group])
        return sum(len(g.token_ids) for g in gens)

    tokenizer = backend.tokenizer
    tokenizer.padding_side = "left"

    def run_generate(group: list) -> int:
        texts = [tokenizer.apply_chat_template(m, add_generation_prompt=True, tokenize=False) for m in group]
        encoded = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)
        options = {"do_sample": True, "top_k": 0, **sampling} if sampling else {"do_sample": False}
        with torch.inference_mode():
            out = backend.model.generate(**encoded, max_new_tokens=NEW_TOKENS, pad_token_id=backend.pad_id, **options)
        useful = 0
        for row in out[:, encoded["input_ids"].shape[1]:].tolist():
            ends = [i for i, token in enumerate(row) if token in eos]
            useful += ends[0] + 1 if ends else len(row)
        return useful

    run = run_backend if impl == "hf-backend" else run_generate
    load_rss = _peak_rss_mib()
    run([messages[0]])  # warm-up
    start = time.perf_counter()
    tokens = sum(run(group) for group in groups)
    seconds = time.perf_counter() - start
    return {"impl": impl, "batch": batch, "mode": mode, "dtype": backend.dtype, "useful_tokens": tokens,
            "seconds": round(seconds, 2), "tok_per_s": round(tokens / seconds, 1),
            "rss_after_load_mib": round(load_rss), "peak_rss_mib": round(_peak_rss_mib()),
            "torch_threads": torch.get_num_threads()}


def _in_subprocess(args: list[str]) -> dict[str, Any]:
    done = subprocess.run([sys.executable, __file__, "--worker", *args], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        sys.exit(f"{' '.join(args)} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def bbq_command(out: Path) -> list[str]:
    return ["eval", "--model", MODEL, "--task", "bbq",
            "--set", f"task_options.path={ROOT / 'src/selfcorrect/data/bbq/Age.jsonl'}", "--limit", "150",
            "--question-prompt", "bbq-question", "--set", "max_new_tokens=64", "--temperature", "0",
            "--set", "option_confidence=true", "--rounds", "2", "--no-cache", "--quiet", "--out", str(out)]


def bbq_worker() -> dict[str, Any]:
    """The 150-question BBQ eval with 2 review rounds, in this (fresh) process: its wall time and its own peak RSS."""
    from selfcorrect.cli import main as cli

    with tempfile.TemporaryDirectory() as scratch:
        out = Path(scratch) / "bbq"
        start = time.perf_counter()
        if cli(bbq_command(out)) != 0:
            sys.exit("BBQ eval failed")
        seconds = time.perf_counter() - start
        summary = json.loads((out / "summary.json").read_text())
    return {"bbq_150x3_seconds": round(seconds, 1), "bbq_150x3_peak_rss_mb": round(_peak_rss_mib()),
            "bbq_dtype": summary["backend"]["dtype"],
            "bbq_accuracy_by_round": [r["value"] for r in summary["metrics"]["accuracy_by_round"]],
            "bbq_command": "selfcorrect " + " ".join(bbq_command(Path("DIR")))}


def _cpu_flags() -> list[str]:
    try:
        flags = Path("/proc/cpuinfo").read_text().split()
    except OSError:
        return []
    return sorted({f for f in flags if f in ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile")})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", default="1,64,256")
    parser.add_argument("--modes", default="greedy,sampled")
    parser.add_argument("--bbq", action="store_true", help="also time the 150-question BBQ eval")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/generation-real.json")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("spec", nargs="*", help=argparse.SUPPRESS)
    args = parser.parse_args()
    os.environ.update({"HF_HUB_OFFLINE": "1", "HF_HUB_DISABLE_PROGRESS_BARS": "1", "TOKENIZERS_PARALLELISM": "false"})
    if args.worker:
        impl, batch, mode = args.spec
        print(json.dumps(bbq_worker() if impl == "bbq" else worker(impl, int(batch), mode)))
        return
    from selfcorrect.models import resolve_model

    resolve_model(MODEL)  # convert once, outside the timings
    results = []
    for batch in [int(b) for b in args.batches.split(",")]:
        for mode in args.modes.split(","):
            ours = _in_subprocess(["hf-backend", str(batch), mode])
            impls = ["generate"] + (["generate-fp32"] if ours["dtype"] != "float32" else [])
            rows = [ours] + [_in_subprocess([impl, str(batch), mode]) for impl in impls]
            same, fp32 = rows[1], rows[-1]
            ours["ratio_same_dtype"] = round(ours["tok_per_s"] / same["tok_per_s"], 2)
            ours["ratio_vs_fp32_generate"] = round(ours["tok_per_s"] / fp32["tok_per_s"], 2)
            results += rows
            for row in rows:
                print(json.dumps(row), flush=True)
    report: dict[str, Any] = {"model": MODEL, "workload": "GSM8K test questions, chat template, EOS on",
                              "max_new_tokens": NEW_TOKENS, "sampled": SAMPLED, "cpu_flags": _cpu_flags(),
                              "results": results}
    headline = [r for r in results if r["impl"] == "hf-backend" and r["batch"] == 64 and r["mode"] == "greedy"]
    if headline:
        report["ratio_same_dtype"] = headline[0]["ratio_same_dtype"]
        report["ratio_vs_fp32_generate"] = headline[0]["ratio_vs_fp32_generate"]
    if args.bbq:
        report.update(_in_subprocess(["bbq", "0", "-"]))
        print(json.dumps({k: v for k, v in report.items() if k.startswith("bbq")}), flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(report, indent=2) + "\n")
    os.replace(tmp, args.out)


if __name__ == "__main__":
    main()
