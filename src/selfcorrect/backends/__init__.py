"""Backends: one `generate(requests) -> list[Generation]` over a whole batch, for every kind of model."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from selfcorrect.backends.base import Backend, Generation, GenerationRequest, SamplingParams, request_seed
from selfcorrect.registry import construct, resolve

_REGISTRY: dict[str, str] = {
    # Lazy "module:Class" strings: heavy imports (torch, vllm, http clients) happen only when a backend is built.
    "hf": "selfcorrect.backends.hf:HFBackend",
    "scripted": "selfcorrect.backends.scripted:ScriptedBackend",
    "openai": "selfcorrect.backends.openai:OpenAIBackend",
    "vllm": "selfcorrect.backends.vllm:VLLMBackend",
}


def backend_names() -> list[str]:
    return sorted(_REGISTRY)


def backend_class(name: str) -> type[Backend]:
    return resolve(_REGISTRY, name, "backend")


def load_backend(name: str, **options: Any) -> Backend:
    """Build a backend by name with its keyword options (e.g. `model=` a local folder or hub id)."""
    return construct(backend_class(name), options, f"backend {name!r}")


def build_backend(name: str, model: str | None, options: dict[str, Any], cache: bool | str | Path = False) -> Backend:
    """Build the backend that runs `model`; a built-in model name (`selfcorrect models`) is made on first use.

    `cache` wraps it in the shared SQLite generation cache (True = the default file, or a path), so a re-run or a
    resumed run does not pay for the same request twice. A backend without a model (`has_model` False: its answers
    come from a script that is not part of the cache key) is given no model and never cached.
    """
    has_model = backend_class(name).has_model
    backend = load_backend(name, **({"model": model} if model and has_model else {}), **options)
    if cache is False or not has_model:
        return backend
    from selfcorrect.backends.cache import CachedBackend

    return CachedBackend(backend, None if cache is True else cache)


def model_weights(name: str, model: str | None) -> Path:
    """Where the weights of `model` are as backend `name` loads them: a built-in name resolved to its folder by a
    backend that resolves built-in names, otherwise the name as given (what fine-tuning starts from)."""
    if not backend_class(name).resolves_builtin_models:
        return Path(str(model))
    from selfcorrect.models import resolve_model

    return Path(resolve_model(model))


__all__ = ["Backend", "Generation", "GenerationRequest", "SamplingParams", "backend_class", "backend_names",
           "build_backend", "load_backend", "model_weights", "request_seed"]
