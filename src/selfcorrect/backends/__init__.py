"""Backends: one `generate(requests) -> list[Generation]` over a whole batch, for every kind of model."""

from __future__ import annotations

import importlib
from typing import Any

from selfcorrect.backends.base import Backend, Generation, GenerationRequest, SamplingParams, request_seed
from selfcorrect.errors import SelfCorrectError, suggest

_REGISTRY: dict[str, str] = {
    # Lazy "module:Class" strings: heavy imports (torch, vllm, http clients) happen only when a backend is built.
    "hf": "selfcorrect.backends.hf:HFBackend",
    "scripted": "selfcorrect.backends.scripted:ScriptedBackend",
    "openai": "selfcorrect.backends.openai:OpenAIBackend",
    "vllm": "selfcorrect.backends.vllm:VLLMBackend",
}


def backend_names() -> list[str]:
    return sorted(_REGISTRY)


def load_backend(name: str, **options: Any) -> Backend:
    """Build a backend by name with its keyword options (e.g. `model=` a local folder or hub id)."""
    if name not in _REGISTRY:
        raise SelfCorrectError(f"unknown backend {name!r}{suggest(name, backend_names())}; "
                               f"known: {', '.join(backend_names())}")
    module, cls = _REGISTRY[name].split(":")
    try:
        backend_cls = getattr(importlib.import_module(module), cls)
    except ModuleNotFoundError as exc:
        raise SelfCorrectError(f"backend {name!r} needs a package that is not installed: {exc.name}") from None
    import inspect

    accepted = inspect.signature(backend_cls).parameters
    unknown = sorted(k for k in options if k not in accepted)
    if unknown and not any(p.kind is p.VAR_KEYWORD for p in accepted.values()):
        raise SelfCorrectError(f"backend {name!r} does not take option(s) {', '.join(unknown)}; it takes: "
                               f"{', '.join(k for k in accepted if k != 'self')}")
    return backend_cls(**options)


__all__ = ["Backend", "Generation", "GenerationRequest", "SamplingParams", "backend_names", "load_backend",
           "request_seed"]
