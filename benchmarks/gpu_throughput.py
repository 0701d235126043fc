"""Tokens/s of the `vllm` backend vs the `hf` backend on one model and the same requests, on a CUDA GPU.

    python benchmarks/gpu_throughput.py --model DIR [--requests 256] [--new-tokens 64] [--out results.json]
    python benchmarks/gpu_throughput.py --tiny --backends hf --device cpu --requests 8   # CPU dry run of the script

Requests are round-1 chat requests of sandbox-chain test questions, greedy (`backends._requests`), the same list
for every backend. Each backend is built (timed apart: vLLM's start-up compiles and captures CUDA graphs), answers
8 requests untimed to warm up, then all of them in ONE `generate` call, timed; then it is closed before the next is
built, so the two never share the GPU. Both run in bfloat16. Tokens are the generated token ids; tok/s is their
total over the timed call's wall time. Greedy texts of the two backends are compared, and the share of identical
ones is reported: they need not all agree (other kernels flip near-ties), but a low share would be a bug.
Prints a table, writes JSON (with the GPU, torch and vLLM versions).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from backends import _requests, _timed  # the same requests and timing as the backends benchmark


def _options(name: str, device: str) -> dict[str, Any]:
    if name == "hf":
        return {"device": device, "dtype": "bfloat16" if device == "cuda" else "float32"}
    return {"dtype": "bfloat16", "gpu_memory_utilization": 0.5, "max_model_len": 2048}


def _run(name: str, model: str, device: str, requests: list[Any]) -> tuple[dict[str, Any], list[Any]]:
    from selfcorrect.backends import load_backend

    started = time.perf_counter()
    backend = load_backend(name, model=model, **_options(name, device))
    build_s = time.perf_counter() - started
    try:
        backend.generate(requests[:8])
        seconds, generations = _timed(backend, requests)
    finally:
        backend.close()
    tokens = sum(len(g.token_ids) for g in generations)
    return {"backend": name, "options": _options(name, device), "build_s": round(build_s, 2),
            "requests": len(requests), "seconds": round(seconds, 3), "tokens": tokens,
            "tok_per_s": round(tokens / seconds, 1), "req_per_s": round(len(requests) / seconds, 2)}, generations


def _machine() -> dict[str, Any]:
    import importlib.metadata

    import torch

    info: dict[str, Any] = {"platform": platform.platform(), "python": platform.python_version(),
                            "torch": torch.__version__, "cuda": torch.version.cuda}
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    try:
        info["vllm"] = importlib.metadata.version("vllm")
    except importlib.metadata.PackageNotFoundError:
        info["vllm"] = None
    return info


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="a model folder")
    parser.add_argument("--tiny", action="store_true", help="a random tiny Llama built in a temporary folder")
    parser.add_argument("--backends", default="vllm,hf", help="comma-separated, timed in this order")
    parser.add_argument("--device", default="cuda", help="the hf backend's device")
    parser.add_argument("--requests", type=int, default=256)
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--out", type=Path, help="write the results here as JSON")
    args = parser.parse_args()
    if not args.model and not args.tiny:
        parser.error("give --model DIR or --tiny")
    os.environ.update({"HF_HUB_OFFLINE": "1", "HF_HUB_DISABLE_PROGRESS_BARS": "1", "TOKENIZERS_PARALLELISM": "false"})
    with tempfile.TemporaryDirectory() as tmp:
        if args.tiny:
            from selfcorrect.testing.tiny_hf import tiny_model_dir

            model = str(tiny_model_dir("llama", tmp))
        else:
            model = str(Path(args.model).resolve())
        requests = _requests(args.requests, args.new_tokens)
        rows, texts = [], {}
        for name in args.backends.split(","):
            row, generations = _run(name, model, args.device, requests)
            rows.append(row)
            texts[name] = [g.text for g in generations]
    result: dict[str, Any] = {"model": model if not args.tiny else "tiny random llama", "machine": _machine(),
                              "new_tokens": args.new_tokens, "rows": rows}
    if len(texts) == 2:
        first, second = texts.values()
        result["identical_greedy_share"] = round(sum(a == b for a, b in zip(first, second, strict=True))
                                                 / len(first), 3)
    print(f"{'backend':<8} {'build s':>8} {'requests':>8} {'seconds':>8} {'tokens':>8} {'tok/s':>9}")
    for r in rows:
        print(f"{r['backend']:<8} {r['build_s']:>8.1f} {r['requests']:>8} {r['seconds']:>8.3f} {r['tokens']:>8} "
              f"{r['tok_per_s']:>9.0f}")
    if "identical_greedy_share" in result:
        print(f"identical greedy texts: {result['identical_greedy_share']:.1%}")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
