"""Typed configs: pydantic models that reject unknown keys, load from YAML, and take `key=value` overrides.

A typo in a config key is the most common silent bug in research code (the run uses a default and nobody notices),
so every config here forbids extra keys and reports the file and the key in one line.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError

from selfcorrect.errors import SelfCorrectError


class StrictModel(BaseModel):
    """Base for every config: unknown keys are errors, values are validated on assignment too."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


C = TypeVar("C", bound=StrictModel)


def _describe(exc: ValidationError, source: str) -> str:
    err = exc.errors()[0]
    where = ".".join(str(p) for p in err["loc"]) or "<root>"
    if err["type"] == "extra_forbidden":
        return f"{source}: unknown config key {where!r}"
    return f"{source}: config key {where!r}: {err['msg']}"


def build_config(cls: type[C], data: dict[str, Any], source: str = "config") -> C:
    """Validate a dict into `cls`, turning pydantic's report into one line that names the source and key."""
    try:
        return cls.model_validate(data)
    except ValidationError as exc:
        raise SelfCorrectError(_describe(exc, source)) from None


def read_yaml(path: str | Path) -> dict[str, Any]:
    import yaml

    path = Path(path)
    if not path.is_file():
        raise SelfCorrectError(f"config file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f" line {mark.line + 1}" if mark is not None else ""
        raise SelfCorrectError(f"{path}{line}: invalid YAML") from None
    if not isinstance(data, dict):
        raise SelfCorrectError(f"{path}: a config file must hold a mapping of keys to values")
    return data


def parse_overrides(items: list[str] | None) -> dict[str, Any]:
    """`["a.b=3", "name=x"]` -> `{"a": {"b": 3}, "name": "x"}`; values are parsed as YAML scalars."""
    import yaml

    result: dict[str, Any] = {}
    for item in items or []:
        if "=" not in item:
            raise SelfCorrectError(f"override {item!r} must look like key=value")
        key, raw = item.split("=", 1)
        node = result
        *parents, leaf = key.strip().split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = yaml.safe_load(raw) if raw else ""
    return result


def merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    """Deep-merge `update` into a copy of `base` (nested dicts merge, everything else replaces)."""
    out = dict(base)
    for key, value in update.items():
        out[key] = merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def load_config(cls: type[C], path: str | Path | None = None, overrides: dict[str, Any] | None = None) -> C:
    """Defaults, then the YAML file, then CLI overrides; the result is what the run folder records."""
    data = read_yaml(path) if path else {}
    data = merge(data, overrides or {})
    return build_config(cls, data, source=str(path) if path else "config")
