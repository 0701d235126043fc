"""The batcher behind `selfcorrect serve`: concurrent HTTP requests become one backend call.

Handlers queue their requests and ONE worker thread sends whatever is queued to `backend.generate` in a single
call (the hf backend decodes them together). Each request keeps its own `seed`, and the hf backend's samples do not
depend on their batch mates, so a request answered here equals the same request sent to the backend directly,
greedy or sampled. If a batch fails, its requests are retried one by one so only the faulty one gets the error.
Other work on the model (the forward passes behind `top_logprobs`) goes through the same worker with `call`.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

from selfcorrect.backends.base import Backend, Generation, GenerationRequest


@dataclass
class _Job:
    requests: list[GenerationRequest]
    future: Future
    call: Callable[[], Any] | None = None  # other work on the model, run alone between batches


class Batcher:
    """Sends everything queued to the backend in one `generate` call, from one worker thread.

    One worker also means the backend is never called from two threads at once (torch models are not re-entrant).
    The worker takes every request already queued; if that found more than one (the server is under load), it
    keeps collecting while requests keep arriving (gaps under `gap_s`, at most `max_wait_s` in all, at most
    `max_batch` requests), since the next requests of a busy client pool arrive as a burst over a few milliseconds.
    """

    def __init__(self, backend: Backend, max_batch: int = 64, gap_s: float = 0.01, max_wait_s: float = 0.05) -> None:
        self.backend = backend
        self.max_batch = max_batch
        self.gap_s = gap_s
        self.max_wait_s = max_wait_s
        self.batches: list[int] = []  # requests per backend call, for tests and benchmarks
        self._queue: queue.Queue[_Job | None] = queue.Queue()
        self._worker = threading.Thread(target=self._run, name="selfcorrect-serve-batcher", daemon=True)
        self._worker.start()

    def enqueue(self, requests: list[GenerationRequest]) -> Future:
        """Queue `requests`; the future gets their generations, answered as part of whatever batch they join."""
        job = _Job(requests, Future())
        self._queue.put(job)
        return job.future

    def submit(self, requests: list[GenerationRequest]) -> list[Generation]:
        """`enqueue`, then wait for the answer."""
        return self.enqueue(requests).result()

    def call(self, work: Callable[[], Any]) -> Future:
        """Run `work` on the worker thread, between batches (the model is never used from two threads)."""
        job = _Job([], Future(), work)
        self._queue.put(job)
        return job.future

    def close(self) -> None:
        self._queue.put(None)
        self._worker.join(timeout=30)

    def _run(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                return
            if first.call is not None:
                self._call(first)
                continue
            jobs, size, calls = [first], len(first.requests), []
            deadline = time.monotonic() + self.max_wait_s
            while size < self.max_batch:
                # Wait for company only under load (something already queued with the first): a lone client
                # never pays the gap.
                wait_s = min(self.gap_s, deadline - time.monotonic()) if len(jobs) > 1 else 0.0
                try:
                    job = self._queue.get(timeout=wait_s) if wait_s > 0 else self._queue.get_nowait()
                except queue.Empty:
                    break
                if job is None:
                    self._queue.put(None)  # finish this batch, then stop
                    break
                if job.call is not None:
                    calls.append(job)
                    continue
                jobs.append(job)
                size += len(job.requests)
            self._answer(jobs)
            for job in calls:
                self._call(job)

    @staticmethod
    def _call(job: _Job) -> None:
        try:
            job.future.set_result(job.call())  # type: ignore[misc]
        except Exception as exc:
            job.future.set_exception(exc)

    def _answer(self, jobs: list[_Job]) -> None:
        try:
            outputs = self._generate([r for job in jobs for r in job.requests])
        except Exception as exc:
            if len(jobs) == 1:
                jobs[0].future.set_exception(exc)
                return
            for job in jobs:  # isolate the faulty request
                self._answer([job])
            return
        offset = 0
        for job in jobs:
            mine = [g for g in outputs if offset <= g.request_index < offset + len(job.requests)]
            for gen in mine:
                gen.request_index -= offset
            offset += len(job.requests)
            job.future.set_result(mine)

    def _generate(self, requests: Sequence[GenerationRequest]) -> list[Generation]:
        self.batches.append(len(requests))
        return self.backend.generate(requests)
