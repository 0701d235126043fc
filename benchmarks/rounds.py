"""Seconds and backend calls of a 5-round self-correction run over 1,000 sandbox questions.

    python benchmarks/rounds.py [--model DIR] [--questions 1000] [--rounds 5] [--threads 1] [--out results.json]

Without --model the cached sandbox model is used (pretrained first if missing). The run is `selfcorrect eval` with
the intrinsic method at temperature 1, every question in one chunk, so each round must be ONE backend call over all
unfinished questions: the script counts the calls the backend really receives (not the method's own count) and
fails if they differ from the number of rounds. Each call's batch size and seconds are reported.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from selfcorrect.backends.base import Backend, Generation, GenerationRequest


class CountingBackend(Backend):
    """Passes every call to the real backend and records (batch size, seconds)."""

    def __init__(self, inner: Backend) -> None:
        self.inner = inner
        self.name = inner.name
        self.supports_hidden_states = inner.supports_hidden_states
        self.calls: list[tuple[int, float]] = []

    @property
    def model_id(self) -> str:
        return self.inner.model_id

    def generate(self, requests: Sequence[GenerationRequest]) -> list[Generation]:
        started = time.perf_counter()
        out = self.inner.generate(requests)
        self.calls.append((len(requests), time.perf_counter() - started))
        return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="sandbox")
    parser.add_argument("--questions", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=5, help="answer rounds in all (first answer included)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()

    import torch

    from selfcorrect.backends import build_backend
    from selfcorrect.methods.evaluate import EvalConfig, run_eval

    torch.set_num_threads(args.threads)
    config = EvalConfig(task="sandbox-chain", task_options={"sizes": {"test": args.questions}}, model=args.model,
                        rounds=args.rounds - 1, temperature=1.0, seed=args.seed, chunk_size=args.questions)
    loaded = time.perf_counter()
    backend = CountingBackend(build_backend(config.backend, config.model, config.backend_options))
    load_s = time.perf_counter() - loaded
    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        summary = run_eval(config, Path(tmp) / "run", quiet=True, backend=backend)
        total_s = time.perf_counter() - started
    if len(backend.calls) != args.rounds:
        raise SystemExit(f"FAIL: {len(backend.calls)} backend calls for {args.rounds} rounds")
    result: dict[str, Any] = {
        "questions": args.questions, "rounds": args.rounds, "threads": args.threads, "seed": args.seed,
        "model": backend.model_id, "model_load_s": round(load_s, 2), "run_s": round(total_s, 2),
        "generation_s": sum(round(s, 2) for _, s in backend.calls), "backend_calls": len(backend.calls),
        "calls": [{"batch": b, "seconds": round(s, 2)} for b, s in backend.calls],
        "accuracy_by_round": [round(r["value"], 4) for r in summary["metrics"]["accuracy_by_round"]],
        "torch": torch.__version__}
    print(f"{args.questions} questions x {args.rounds} rounds: {total_s:.1f} s "
          f"({len(backend.calls)} backend calls: {[b for b, _ in backend.calls]})")
    for i, (batch, seconds) in enumerate(backend.calls, 1):
        print(f"round {i}: batch {batch}, {seconds:.2f} s")
    if args.out:
        args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
