"""Backends: one `generate(requests) -> list[Generation]` over a whole batch, for every kind of model."""

from __future__ import annotations

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


def load_backend(name: str, **options: Any) -> Backend:
    """Build a backend by name with its keyword options (e.g. `model=` a local folder or hub id)."""
    return construct(resolve(_REGISTRY, name, "backend"), options, f"backend {name!r}")


__all__ = ["Backend", "Generation", "GenerationRequest", "SamplingParams", "backend_names", "load_backend",
           "request_seed"]
