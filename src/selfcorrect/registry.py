"""Name -> "module:Class" registries, resolved only when asked for, and construction with checked options.

Tasks and backends are both picked by name from configs and the CLI. Importing them lazily keeps heavy packages
(torch, vllm, http clients) out of `selfcorrect --help`; checking options against the constructor's signature turns
a misspelt option into one line naming it, instead of a TypeError from deep inside a constructor.
"""

from __future__ import annotations

import importlib
import inspect
from typing import Any

from selfcorrect.errors import SelfCorrectError, suggest


def resolve(registry: dict[str, str], name: str, kind: str) -> type:
    """The class registered under `name`; one line (with a suggestion) for an unknown name or a missing package."""
    if name not in registry:
        raise SelfCorrectError(f"unknown {kind} {name!r}{suggest(name, sorted(registry))}; "
                               f"known: {', '.join(sorted(registry))}")
    module, cls = registry[name].split(":")
    try:
        return getattr(importlib.import_module(module), cls)
    except ModuleNotFoundError as exc:
        raise SelfCorrectError(f"{kind} {name!r} needs a package that is not installed: {exc.name}") from None


def construct(cls: type, options: dict[str, Any], what: str) -> Any:
    """`cls(**options)`, refusing options its constructor does not take (unless it takes **kwargs)."""
    accepted = inspect.signature(cls).parameters
    unknown = sorted(k for k in options if k not in accepted)
    if unknown and not any(p.kind is p.VAR_KEYWORD for p in accepted.values()):
        raise SelfCorrectError(f"{what} does not take option(s) {', '.join(unknown)}; it takes: "
                               f"{', '.join(k for k in accepted if k != 'self')}")
    return cls(**options)
