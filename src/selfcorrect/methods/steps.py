"""Resumable steps for iterative methods (STaSC, iterated InSeC): each finished step is a file or folder.

An iteration is generation -> filtering -> fine-tuning -> evaluation. Each step writes its result atomically under
the run folder (`iter-2/generation.jsonl`, `iter-2/model/`, ...); a step whose result exists is loaded instead of
recomputed. A run killed at any point therefore continues from the last finished step with `--resume`, and because
every step is seeded from (run seed, iteration, step) it produces the same result as an uninterrupted run.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from selfcorrect.runs import atomic_write_text, read_trajectories, write_json
from selfcorrect.trajectory import Trajectory


class StepStore:
    """The finished steps of one run, under its folder.

    `store.json(name, step, *args)` returns the saved result of step `name`, or else calls `step(*args)`, saves the
    result atomically and returns it. A step is a named function of the arguments given here, never of variables a
    closure captured, so a method's loop reads as its pseudo-code and what a step depends on is visible at the call.
    """

    def __init__(self, root: str | Path):
        self.root = Path(root)

    def path(self, name: str) -> Path:
        return self.root / name

    def json(self, name: str, step: Callable[..., dict[str, Any]], *args: Any) -> dict[str, Any]:
        path = self.path(name)
        if path.is_file():
            return json.loads(path.read_text())
        result = step(*args)
        write_json(path, result)
        return result

    def trajectories(self, name: str, step: Callable[..., list[Trajectory]], *args: Any) -> list[Trajectory]:
        path = self.path(name)
        if path.is_file():
            return read_trajectories(path)
        result = step(*args)
        atomic_write_text(path, "".join(t.to_json() + "\n" for t in result))
        return result

    def folder(self, name: str, step: Callable[..., Any], *args: Any) -> Path:
        """A folder step (a fine-tuned model): `step(tmp, *args)` fills a temporary folder, renamed when done."""
        path = self.path(name)
        if path.is_dir():
            return path
        tmp = path.with_name(path.name + ".partial")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.parent.mkdir(parents=True, exist_ok=True)
        step(tmp, *args)
        os.replace(tmp, path)
        return path


@contextmanager
def timed(timings: dict[str, float], key: str) -> Iterator[None]:
    """Record in `timings[key]` the seconds the block took (a summary's `timings`); nothing if it raised."""
    started = time.perf_counter()
    yield
    timings[key] = time.perf_counter() - started
