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


def _differences(old: Any, new: Any, prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between two config dumps of the same class."""
    if isinstance(old, dict) and isinstance(new, dict):
        return [key for name in sorted(set(old) | set(new))
                for key in _differences(old.get(name), new.get(name), f"{prefix}{name}.")]
    return [] if old == new else [prefix.rstrip(".")]


def _at(data: Any, dotted: str) -> Any:
    for part in dotted.split("."):
        data = data.get(part) if isinstance(data, dict) else None
    return data


def resumed_config(cls: type[C], saved: dict[str, Any], given: dict[str, Any], where: str) -> C:
    """The config a run was started with (its saved config.yaml), so `--resume` needs no flag repeated; a given
    value that contradicts it is one error naming the key, since continuing under other settings would mix two
    runs in one folder."""
    before = build_config(cls, saved, source=where)
    after = build_config(cls, merge(saved, given), source=where)
    changed = _differences(before.model_dump(), after.model_dump())
    if changed:
        key = changed[0]
        raise SelfCorrectError(f"cannot resume {where}: {key} = {_at(after.model_dump(), key)!r} contradicts its "
                               f"saved value {_at(before.model_dump(), key)!r}; leave it out to continue the run as "
                               f"it was, or start a new --out")
    return before


def load_config(cls: type[C], path: str | Path | None = None, overrides: dict[str, Any] | None = None) -> C:
    """Defaults, then the YAML file, then CLI overrides; the result is what the run folder records."""
    data = read_yaml(path) if path else {}
    data = merge(data, overrides or {})
    return build_config(cls, data, source=str(path) if path else "config")
