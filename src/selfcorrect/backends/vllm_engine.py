"""vLLM's engine (`vllm.LLM`) in a process of its own, so that closing it really returns its GPU memory.

Why a process: dropping the last reference to an in-process `vllm.LLM` frees nothing reliably (the CUDA context,
the KV cache, CUDA graphs and the compile caches stay with the process). STaSC and InSeC build one engine per model
(M0, then each fine-tuned M_n) and fine-tune in between, so each engine must be gone, memory included, before the
next one or the trainer starts. Ending the child process is the one release that always works.

The child is started with `spawn` (a forked child would inherit the parent's CUDA state), builds the engine, and
answers `generate` messages over a pipe with plain records (`plain_outputs`), never vLLM objects, so nothing
vLLM-specific has to cross the process boundary. The engine's own log (loading, CUDA graphs) goes to the same
terminal as the parent's. `module` names the package holding `LLM` and `SamplingParams`: "vllm", or a stand-in with
the same two names in tests.
"""

from __future__ import annotations

import contextlib
import importlib
import multiprocessing
import weakref
from collections.abc import Sequence
from typing import Any

from selfcorrect.errors import SelfCorrectError

#: Seconds between liveness checks while waiting for the engine, and the wait for it to exit on close.
_POLL_S = 1.0
_EXIT_S = 60.0


def sampled_logprobs(completion: Any) -> list[float] | None:
    """Logprob of each generated token from a CompletionOutput: `logprobs[i]` maps token id -> Logprob."""
    positions = getattr(completion, "logprobs", None)
    if positions is None:
        return None
    values = []
    for position, token_id in zip(positions, completion.token_ids, strict=False):
        entry = position.get(token_id) if position is not None else None
        if entry is None:
            return None
        values.append(float(getattr(entry, "logprob", entry)))
    return values


def plain_outputs(outputs: Sequence[Any]) -> list[list[dict[str, Any]]]:
    """vLLM RequestOutputs -> for each request, its completions as plain records ordered by completion index."""
    return [[{"index": c.index, "text": c.text, "token_ids": list(c.token_ids), "token_logprobs": sampled_logprobs(c),
              "finish_reason": c.finish_reason, "stop_reason": None if c.stop_reason is None else str(c.stop_reason)}
             for c in sorted(output.outputs, key=lambda c: c.index)]
            for output in outputs]


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def serve_engine(conn: Any, options: dict[str, Any], module: str) -> None:
    """The child's whole life: build the engine, answer generate messages until told to close (or orphaned)."""
    try:
        package = importlib.import_module(module)
        llm = package.LLM(**options)
    except BaseException as exc:  # every failure goes back to the parent as one line
        conn.send(("error", _one_line(exc)))
        return
    conn.send(("ready", None))
    while True:
        try:
            message = conn.recv()
        except EOFError:  # the parent is gone
            return
        if message[0] == "close":
            return
        _, prompts, param_dicts = message
        try:
            params = [package.SamplingParams(**d) for d in param_dicts]
            conn.send(("ok", plain_outputs(llm.generate(prompts, params, use_tqdm=False))))
        except Exception as exc:  # reported to the parent, which stops the round
            conn.send(("error", _one_line(exc)))


def _shut_down(conn: Any, process: Any) -> None:
    if process.is_alive():
        with contextlib.suppress(OSError):  # a child that is already going has closed its end
            conn.send(("close",))
        process.join(_EXIT_S)
        if process.is_alive():
            process.kill()
            process.join()
    conn.close()


class EngineProcess:
    """A `vllm.LLM` built from `options` in a spawned child process; `close()` ends the process."""

    def __init__(self, options: dict[str, Any], module: str = "vllm") -> None:
        context = multiprocessing.get_context("spawn")
        self._conn, child = context.Pipe()
        # Not a daemon: vLLM starts processes of its own, which a daemon may not. An engine left open is still
        # ended when this interpreter exits (the finalizer runs before multiprocessing joins its children).
        self._process = context.Process(target=serve_engine, args=(child, options, module),
                                         name="selfcorrect-vllm-engine")
        self._process.start()
        child.close()
        self._finalizer = weakref.finalize(self, _shut_down, self._conn, self._process)
        try:
            self._receive("starting the engine")
        except BaseException:
            self.close()
            raise

    @property
    def alive(self) -> bool:
        return self._process.is_alive()

    @property
    def pid(self) -> int | None:
        return self._process.pid

    def _receive(self, doing: str) -> Any:
        while not self._conn.poll(_POLL_S):
            if not self._process.is_alive():
                raise self._died(doing)
        try:
            status, payload = self._conn.recv()
        except EOFError:  # the child's end closed: it is exiting
            self._process.join(_EXIT_S)
            raise self._died(doing) from None
        if status == "error":
            raise SelfCorrectError(f"vllm backend: {doing} failed: {payload}")
        return payload

    def _died(self, doing: str) -> SelfCorrectError:
        return SelfCorrectError(f"vllm backend: the engine process died while {doing} (exit code "
                                f"{self._process.exitcode}); vLLM's own log above says why")

    def generate(self, prompts: list[dict[str, Any]], param_dicts: list[dict[str, Any]]) -> list[list[dict]]:
        if not self.alive:
            raise SelfCorrectError("vllm backend: the engine is closed")
        self._conn.send(("generate", prompts, param_dicts))
        return self._receive("generating")

    def close(self) -> None:
        """Ask the child to exit, wait for it (its exit returns the GPU memory), and kill it if it will not go."""
        self._finalizer()


class InProcessEngine:
    """The same interface over an engine in this process: a stand-in in tests, or an `LLM` the caller owns."""

    def __init__(self, llm: Any, sampling_factory: Any) -> None:
        self.llm = llm
        self._sampling_factory = sampling_factory

    def generate(self, prompts: list[dict[str, Any]], param_dicts: list[dict[str, Any]]) -> list[list[dict]]:
        params = [self._sampling_factory(**d) for d in param_dicts]
        return plain_outputs(self.llm.generate(prompts, params, use_tqdm=False))

    def close(self) -> None:
        """The caller owns the engine; only the reference is dropped."""
        self.llm = None
