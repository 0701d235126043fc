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
from collections.abc import Callable
from pathlib import Path
from typing import Any

from selfcorrect.runs import atomic_write_text, write_json
from selfcorrect.trajectory import Trajectory


class StepStore:
    """Caches the results of named steps under `root`."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        self.computed: list[str] = []

    def path(self, name: str) -> Path:
        return self.root / name

    def json(self, name: str, compute: Callable[[], dict[str, Any]]) -> dict[str, Any]:
        path = self.path(name)
        if path.is_file():
            return json.loads(path.read_text())
        result = compute()
        write_json(path, result)
        self.computed.append(name)
        return result

    def trajectories(self, name: str, compute: Callable[[], list[Trajectory]]) -> list[Trajectory]:
        path = self.path(name)
        if path.is_file():
            return [Trajectory.from_json(line) for line in path.read_text().splitlines() if line.strip()]
        result = compute()
        atomic_write_text(path, "".join(t.to_json() + "\n" for t in result))
        self.computed.append(name)
        return result

    def folder(self, name: str, build: Callable[[Path], Any]) -> Path:
        """A folder step (a fine-tuned model): `build(tmp)` fills a temporary folder that is renamed when done."""
        path = self.path(name)
        if path.is_dir():
            return path
        tmp = path.with_name(path.name + ".partial")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.parent.mkdir(parents=True, exist_ok=True)
        build(tmp)
        os.replace(tmp, path)
        self.computed.append(name)
        return path
