"""Tokens per second of the `hf` backend against plain `model.generate`, same model, same prompts, one run.

    python benchmarks/generation.py --model DIR [--out results.json] [--new-tokens 32] [--threads 1]

Without --model, a tiny random GPT-2 is built with `selfcorrect.testing.tiny_hf` in a temporary folder.

Every configuration (implementation x batch size x greedy/sampled) runs in a fresh subprocess, so peak memory is
that configuration's own: `resource.getrusage(RUSAGE_SELF).ru_maxrss` read after loading the model and again after
generating. Each one is timed end to end (tokenizing the prompts, generating, decoding the texts), one warm-up and
then the best of --repeats.

Both produce exactly --new-tokens per row: `generate` gets `min_new_tokens=max_new_tokens`, and the backend's stop
ids are cleared (`eos_ids = []`, no API option needed), because random or sandbox models end rows early and a
count that depends on EOS luck would not compare the loops. The table reports the tokens each actually produced.
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

IMPLS = ("hf-backend", "generate")
MODES = ("greedy", "sampled")
TEMPERATURE, TOP_P = 1.0, 0.95


def _prompts(batch: int, model_dir: str) -> list[str]:
    """Sandbox questions through the chat template for a sandbox model, else short synthetic English lines."""
    from transformers import AutoTokenizer

    from selfcorrect.sandbox.tokenizer import VOCAB

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    if sorted(tokenizer.get_vocab(), key=tokenizer.get_vocab().get) == list(VOCAB):
        from selfcorrect.tasks import get_task

        questions = get_task("sandbox-chain").questions("test")[:batch]
        return [tokenizer.apply_chat_template([{"role": "user", "content": q}], add_generation_prompt=True,
                                              tokenize=False) for q in questions]
    from selfcorrect.testing.tiny_hf import synthetic_corpus

    lines = synthetic_corpus(n_lines=max(batch, 16), seed=1)
    return [" ".join(line.split()[:12]) for line in lines[:batch]]


def _peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def _runner(impl: str, model_dir: str, mode: str, new_tokens: int) -> Any:
    """A function prompts -> number of tokens produced, for one implementation."""
    from selfcorrect.backends.base import GenerationRequest, SamplingParams
    from selfcorrect.backends.hf import HFBackend

    backend = HFBackend(model_dir)
    if impl == "hf-backend":
        backend.eos_ids = []  # a fixed token count, as min_new_tokens gives generate
        params = SamplingParams(temperature=TEMPERATURE if mode == "sampled" else 0.0, top_p=TOP_P,
                                max_new_tokens=new_tokens)

        def run(prompts: list[str]) -> int:
            gens = backend.generate([GenerationRequest(params, prompt=p) for p in prompts])
            return sum(len(g.token_ids) for g in gens)

        return run
    import torch

    model, tokenizer = backend.model, backend.tokenizer
    tokenizer.padding_side = "left"
    sampling = {"do_sample": True, "temperature": TEMPERATURE, "top_p": TOP_P, "top_k": 0} if mode == "sampled" \
        else {"do_sample": False}

    def run(prompts: list[str]) -> int:
        with torch.inference_mode():
            encoded = tokenizer(prompts, return_tensors="pt", padding=True)
            out = model.generate(**encoded, max_new_tokens=new_tokens, min_new_tokens=new_tokens,
                                 pad_token_id=backend.pad_id, **sampling)
            new = out[:, encoded["input_ids"].shape[1]:]
            tokenizer.batch_decode(new, skip_special_tokens=True)
        return new.numel()

    return run


def worker(args: argparse.Namespace) -> None:
    """One configuration in this process; prints one JSON line."""
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    run = _runner(args.impl, args.model, args.mode, args.new_tokens)
    prompts = _prompts(args.batch, args.model)
    load_rss = _peak_rss_mib()
    run(prompts)  # warm-up
    times, produced = [], 0
    for _ in range(args.repeats):
        start = time.perf_counter()
        produced = run(prompts)
        times.append(time.perf_counter() - start)
    best = min(times)
    print(json.dumps({"impl": args.impl, "batch": args.batch, "mode": args.mode, "tokens": produced,
                      "best_s": best, "tok_per_s": produced / best, "times_s": times,
                      "rss_after_load_mib": load_rss, "peak_rss_mib": _peak_rss_mib(),
                      "torch_threads": torch.get_num_threads()}))


def _run_config(args: argparse.Namespace, impl: str, batch: int, mode: str) -> dict[str, Any]:
    command = [sys.executable, __file__, "--worker", "--impl", impl, "--batch", str(batch), "--mode", mode,
               "--model", args.model, "--new-tokens", str(args.new_tokens), "--repeats", str(args.repeats),
               "--threads", str(args.threads)]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        sys.exit(f"{impl} batch {batch} {mode} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _table(results: list[dict[str, Any]]) -> str:
    speed = {(r["impl"], r["batch"], r["mode"]): r["tok_per_s"] for r in results}
    lines = [f"{'batch':>5} {'mode':<8} {'impl':<11} {'tokens':>7} {'best s':>8} {'tok/s':>9} {'peak MiB':>9} "
             f"{'+gen MiB':>8} {'ours/generate':>13}"]
    for r in results:
        ratio = speed[("hf-backend", r["batch"], r["mode"])] / speed[("generate", r["batch"], r["mode"])]
        ratio_text = f"{ratio:.2f}x" if r["impl"] == "hf-backend" else ""
        lines.append(f"{r['batch']:>5} {r['mode']:<8} {r['impl']:<11} {r['tokens']:>7} {r['best_s']:>8.3f} "
                     f"{r['tok_per_s']:>9.0f} {r['peak_rss_mib']:>9.0f} "
                     f"{r['peak_rss_mib'] - r['rss_after_load_mib']:>8.1f} "
                     f"{ratio_text:>13}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="a model folder (default: build a tiny random gpt2)")
    parser.add_argument("--out", type=Path, help="write the results here as JSON")
    parser.add_argument("--batches", default="1,32,256", help="comma-separated batch sizes")
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--impl", choices=IMPLS, help=argparse.SUPPRESS)
    parser.add_argument("--batch", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--mode", choices=MODES, help=argparse.SUPPRESS)
    args = parser.parse_args()
    os.environ.update({"HF_HUB_OFFLINE": "1", "HF_HUB_DISABLE_PROGRESS_BARS": "1"})
    if args.worker:
        worker(args)
        return
    with tempfile.TemporaryDirectory() as scratch:
        if args.model is None:
            from selfcorrect.testing.tiny_hf import build_tiny_model

            args.model = str(build_tiny_model("gpt2", Path(scratch) / "tiny-gpt2"))
            print(f"no --model given: built a tiny random gpt2 in {args.model}")
        results = [_run_config(args, impl, int(batch), mode)
                   for batch in args.batches.split(",") for mode in MODES for impl in IMPLS]
    print(f"{args.new_tokens} new tokens per row, best of {args.repeats} after a warm-up, "
          f"torch threads {results[0]['torch_threads']}; peak MiB = ru_maxrss of a fresh process per row, "
          f"+gen MiB = its growth during generation")
    print(_table(results))
    if args.out:
        args.out.write_text(json.dumps({"model": args.model, "new_tokens": args.new_tokens,
                                        "repeats": args.repeats, "results": results}, indent=2))


if __name__ == "__main__":
    main()
