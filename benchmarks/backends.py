"""Requests/s and tokens/s of the `openai` backend (against `selfcorrect.serve` on loopback) vs the `hf` backend on
the same model and the same requests, each with the generation cache cold and warm.

    python benchmarks/backends.py [--model DIR | --tiny] [--requests 64] [--new-tokens 32] [--out results.json]

Without --model the cached sandbox model is used (`ensure_sandbox`, pretrained on first use: minutes); --tiny builds a
random tiny GPT-2 instead (seconds). Requests are round-1 chat requests of sandbox-chain test questions, greedy.

What runs: `hf` decodes all requests in one `generate` call in this process. `openai` sends them to a server started
as its own process (`python -m selfcorrect.serve`), `--concurrency` requests in flight; the server batches whatever
is in flight into one backend call. "cold" is a fresh cache file, "warm" the same file again (all hits: the cost of
the lookup alone). Each configuration runs once after one untimed warm-up batch; tokens are the generated token ids.
Greedy outputs of the two backends are compared and the table says whether they are identical.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any


def _requests(n: int, new_tokens: int) -> list[Any]:
    from selfcorrect.backends.base import GenerationRequest, SamplingParams
    from selfcorrect.tasks import get_task

    task = get_task("sandbox-chain", sizes={"test": n})
    params = SamplingParams(max_new_tokens=new_tokens)
    return [GenerationRequest(params, messages=[{"role": "user", "content": task.question(ex)}], id=ex.id)
            for ex in task.examples("test", n)]


def _timed(backend: Any, requests: list[Any]) -> tuple[float, list[Any]]:
    start = time.perf_counter()
    generations = backend.generate(requests)
    return time.perf_counter() - start, generations


def _row(name: str, cache: str, concurrency: int | None, seconds: float, generations: list[Any],
         cached: Any) -> dict[str, Any]:
    tokens = sum(len(g.token_ids) for g in generations)
    return {"backend": name, "cache": cache, "concurrency": concurrency, "requests": len(generations),
            "seconds": seconds, "req_per_s": len(generations) / seconds, "tok_per_s": tokens / seconds,
            "tokens": tokens, "hits": cached.hits, "misses": cached.misses}


def _run_both_caches(name: str, backend: Any, requests: list[Any], cache_dir: Path, concurrency: int | None
                     ) -> tuple[list[dict[str, Any]], list[Any]]:
    from selfcorrect.backends.cache import CachedBackend

    path = cache_dir / f"{name}-{concurrency}.sqlite"
    rows, outputs = [], []
    for cache in ("cold", "warm"):
        cached = CachedBackend(backend, path)
        seconds, outputs = _timed(cached, requests)
        rows.append(_row(name, cache, concurrency, seconds, outputs, cached))
        cached.cache.close()
    return rows, outputs


def _start_server(model: str, port: int, threads: int) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    server = subprocess.Popen([sys.executable, "-m", "selfcorrect.serve", "--model", model, "--port", str(port),
                               "--served-model-name", "bench"], env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, start_new_session=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if server.poll() is not None:
            sys.exit(f"server exited: {server.stderr.read().decode()[-2000:] if server.stderr else ''}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1):
                return server
        except OSError:
            time.sleep(0.2)
    server.terminate()
    sys.exit("server did not come up within 120 s")


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _table(rows: list[dict[str, Any]]) -> str:
    lines = [f"{'backend':<8} {'conc':>4} {'cache':<5} {'requests':>8} {'seconds':>8} {'req/s':>8} {'tok/s':>8} "
             f"{'hits':>5} {'misses':>6}"]
    for r in rows:
        conc = "-" if r["concurrency"] is None else str(r["concurrency"])
        lines.append(f"{r['backend']:<8} {conc:>4} {r['cache']:<5} {r['requests']:>8} {r['seconds']:>8.3f} "
                     f"{r['req_per_s']:>8.1f} {r['tok_per_s']:>8.0f} {r['hits']:>5} {r['misses']:>6}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="a model folder (default: the cached sandbox model)")
    parser.add_argument("--tiny", action="store_true", help="use a random tiny GPT-2 built in a temporary folder")
    parser.add_argument("--requests", type=int, default=64)
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--concurrency", default="1,8", help="comma-separated openai max_concurrency values")
    parser.add_argument("--threads", type=int, default=1, help="torch threads, in this process and the server")
    parser.add_argument("--out", type=Path, help="write the results here as JSON")
    args = parser.parse_args()
    os.environ.update({"HF_HUB_OFFLINE": "1", "HF_HUB_DISABLE_PROGRESS_BARS": "1", "TOKENIZERS_PARALLELISM": "false"})
    import torch

    from selfcorrect.backends.hf import HFBackend
    from selfcorrect.backends.openai import OpenAIBackend

    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as scratch:
        if args.tiny:
            from selfcorrect.testing.tiny_hf import build_tiny_model

            args.model = str(build_tiny_model("gpt2", Path(scratch) / "tiny-gpt2"))
        elif args.model is None:
            from selfcorrect.sandbox.cache import ensure_sandbox

            args.model = str(ensure_sandbox())
        requests = _requests(args.requests, args.new_tokens)
        hf = HFBackend(args.model)
        hf.generate(requests[:4])  # warm-up
        rows, reference = _run_both_caches("hf", hf, requests, Path(scratch), None)

        port = _free_port()
        server = _start_server(args.model, port, args.threads)
        identical = True
        try:
            for concurrency in [int(c) for c in args.concurrency.split(",")]:
                client = OpenAIBackend("bench", f"http://127.0.0.1:{port}/v1", max_concurrency=concurrency,
                                       extra_body={"return_tokens_as_token_ids": True})
                client.generate(requests[:4])  # warm-up
                more, outputs = _run_both_caches("openai", client, requests, Path(scratch), concurrency)
                rows += more
                identical &= [g.text for g in outputs] == [g.text for g in reference]
        finally:
            server.terminate()
            server.wait(timeout=30)
    print(f"model {args.model}; {args.requests} greedy chat requests x {args.new_tokens} new tokens; "
          f"torch threads {args.threads}; {os.cpu_count()} CPUs ({platform.processor() or platform.machine()})")
    print(_table(rows))
    print(f"openai outputs identical to hf: {'yes' if identical else 'NO'}")
    if args.out:
        args.out.write_text(json.dumps({"model": args.model, "requests": args.requests,
                                        "new_tokens": args.new_tokens, "threads": args.threads,
                                        "identical": identical, "results": rows}, indent=2))


if __name__ == "__main__":
    main()
