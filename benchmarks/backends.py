"""Requests/s and tokens/s of the `openai` backend against a server on loopback (`selfcorrect serve`, and with
`--servers selfcorrect,transformers` also `transformers serve`) vs the `hf` backend on the same model and the same
requests, each with the generation cache cold and warm.

    python benchmarks/backends.py [--model DIR | --tiny] [--requests 64] [--new-tokens 32] [--servers selfcorrect]
                                  [--out results.json]

Without --model the cached sandbox model is used (`ensure_sandbox`, pretrained on first use: minutes); --tiny builds a
random tiny GPT-2 instead (seconds). Requests are round-1 chat requests of sandbox-chain test questions, greedy.

What runs: `hf` decodes all requests in one `generate` call in this process. `openai` sends them to a server started
as its own process, `--concurrency` requests in flight: `selfcorrect serve` batches whatever is in flight into one
backend call; `transformers serve` (without --continuous-batching, as on a CPU) decodes one request at a time.
"cold" is a fresh cache file, "warm" the same file again (all hits: the cost of the lookup alone). Each
configuration runs once after one untimed warm-up batch; tokens are the completion tokens the server reports.
Greedy outputs are compared with the hf backend's and the table says whether they are identical.
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


def _row(name: str, cache: str, concurrency: int | None, seconds: float, generations: list[Any], tokens: int,
         cached: Any) -> dict[str, Any]:
    return {"backend": name, "cache": cache, "concurrency": concurrency, "requests": len(generations),
            "seconds": seconds, "req_per_s": len(generations) / seconds, "tok_per_s": tokens / seconds,
            "tokens": tokens, "hits": cached.hits, "misses": cached.misses}


def _run_both_caches(name: str, backend: Any, requests: list[Any], cache_dir: Path, concurrency: int | None
                     ) -> tuple[list[dict[str, Any]], list[Any]]:
    from selfcorrect.backends.cache import CachedBackend

    path = cache_dir / f"{name.replace('/', '-')}-{concurrency}.sqlite"
    rows, outputs, tokens = [], [], 0
    for cache in ("cold", "warm"):
        cached = CachedBackend(backend, path)
        reported = getattr(backend, "usage", {}).get("completion_tokens", 0)
        seconds, outputs = _timed(cached, requests)
        if cache == "cold":  # the server's count where it reports one (the same outputs come back warm)
            served = getattr(backend, "usage", {}).get("completion_tokens", 0) - reported
            tokens = served or sum(len(g.token_ids) for g in outputs)
        rows.append(_row(name, cache, concurrency, seconds, outputs, tokens, cached))
        cached.cache.close()
    return rows, outputs


SERVERS = {
    # name: (command, the model name clients send: transformers serve knows the model by its folder)
    "selfcorrect": (lambda model, port: [sys.executable, "-m", "selfcorrect.cli", "serve", "--model", model,
                                         "--port", str(port), "--served-model-name", "bench"], lambda model: "bench"),
    "transformers": (lambda model, port: [sys.executable, "-m", "transformers.cli.transformers", "serve", model,
                                          "--host", "127.0.0.1", "--port", str(port), "--device", "cpu",
                                          "--dtype", "float32"], lambda model: model),
}


def _start_server(kind: str, model: str, port: int, threads: int, log: Path) -> subprocess.Popen:
    """The server as its own process, its output to `log` (a pipe nobody reads would fill and stall it)."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "HF_HUB_DISABLE_UPDATE_CHECK": "1"}
    with log.open("wb") as sink:
        server = subprocess.Popen(SERVERS[kind][0](model, port), env=env, stdout=sink, stderr=subprocess.STDOUT,
                                  start_new_session=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if server.poll() is not None:
            sys.exit(f"server exited: {log.read_text(errors='replace')[-2000:]}")
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
    lines = [f"{'backend':<20} {'conc':>4} {'cache':<5} {'requests':>8} {'seconds':>8} {'req/s':>8} {'tok/s':>8} "
             f"{'hits':>5} {'misses':>6}"]
    for r in rows:
        conc = "-" if r["concurrency"] is None else str(r["concurrency"])
        lines.append(f"{r['backend']:<20} {conc:>4} {r['cache']:<5} {r['requests']:>8} {r['seconds']:>8.3f} "
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
    parser.add_argument("--servers", default="selfcorrect", help="comma-separated: selfcorrect, transformers")
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

        identical = {}
        for kind in args.servers.split(","):
            port = _free_port()
            server = _start_server(kind, args.model, port, args.threads, Path(scratch) / f"{kind}.log")
            identical[kind] = True
            try:
                for concurrency in [int(c) for c in args.concurrency.split(",")]:
                    print(f"openai/{kind}, {concurrency} in flight ...", file=sys.stderr, flush=True)
                    client = OpenAIBackend(SERVERS[kind][1](args.model), f"http://127.0.0.1:{port}/v1",
                                           max_concurrency=concurrency, logprobs=kind == "selfcorrect",
                                           timeout=600)
                    client.generate(requests[:4])  # warm-up
                    more, outputs = _run_both_caches(f"openai/{kind}", client, requests, Path(scratch),
                                                     concurrency)
                    rows += more
                    identical[kind] &= [g.text for g in outputs] == [g.text for g in reference]
                    client.close()
            finally:
                server.terminate()
                server.wait(timeout=30)
    print(f"model {args.model}; {args.requests} greedy chat requests x {args.new_tokens} new tokens; "
          f"torch threads {args.threads}; {os.cpu_count()} CPUs ({platform.processor() or platform.machine()})")
    print(_table(rows))
    for kind, same in identical.items():
        print(f"openai/{kind} outputs identical to hf: {'yes' if same else 'NO'}")
    if args.out:
        args.out.write_text(json.dumps({"model": args.model, "requests": args.requests,
                                        "new_tokens": args.new_tokens, "threads": args.threads,
                                        "identical": identical, "results": rows}, indent=2))


if __name__ == "__main__":
    main()
