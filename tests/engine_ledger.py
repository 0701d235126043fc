"""Counts the backends a method builds and closes, for the tests that hold STaSC and InSeC to one engine at a time.

On vLLM every engine holds most of the GPU until it is closed, so a method must close each one before it builds the
next and before it fine-tunes. The ledger wraps `build_backend` (which every method and eval builds through) and
`finetune`, and fails the moment either happens while an engine is still open.
"""

from __future__ import annotations

import importlib
from typing import Any


class EngineLedger:
    def __init__(self, monkeypatch: Any) -> None:
        self.open: dict[int, str] = {}
        self.events: list[tuple[str, str]] = []
        backends = importlib.import_module("selfcorrect.backends")
        evaluate = importlib.import_module("selfcorrect.methods.evaluate")  # imported it at module level
        finetune_module = importlib.import_module("selfcorrect.training.finetune")  # the package re-exports it
        self._build, self._finetune = backends.build_backend, finetune_module.finetune
        monkeypatch.setattr(backends, "build_backend", self.build)
        monkeypatch.setattr(evaluate, "build_backend", self.build)
        monkeypatch.setattr(finetune_module, "finetune", self.finetune)

    def build(self, name: str, model: str | None, *args: Any, **kwargs: Any) -> Any:
        assert not self.open, f"built an engine for {model} while {sorted(self.open.values())} was still open"
        backend = self._build(name, model, *args, **kwargs)
        self.open[id(backend)] = str(model)
        self.events.append(("open", str(model)))
        close = backend.close

        def closed() -> None:
            self.events.append(("close", self.open.pop(id(backend))))
            close()

        backend.close = closed
        return backend

    def finetune(self, *args: Any, **kwargs: Any) -> Any:
        assert not self.open, f"fine-tuning while {sorted(self.open.values())} was still open"
        self.events.append(("finetune", ""))
        return self._finetune(*args, **kwargs)
