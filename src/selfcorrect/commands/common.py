"""Options and config plumbing shared by every command module."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from selfcorrect.commands.options import CONFIG_KEYS
from selfcorrect.errors import SelfCorrectError


def config_from_cli(cls: Any, ctx: typer.Context, resume_from: Path | None = None, section: str | None = None) -> Any:
    """Defaults < YAML file (--config) < explicit CLI flags < --set overrides.

    A flag sets the config key of its own name (or its `CONFIG_KEYS` entry) when `cls` has that key and the flag was
    given, so a command lists a flag once, in its signature. With `resume_from` (a run folder) the run's saved
    config.yaml (or its `section`, for a sweep that saves more than one config) takes the place of the defaults, and
    whatever is given must agree with it.
    """
    from selfcorrect.config import load_config, merge, parse_overrides, read_yaml, resumed_config
    from selfcorrect.runs import read_saved_config

    params = ctx.params
    flags: dict[str, Any] = {}
    for name, value in params.items():
        path = CONFIG_KEYS.get(name, name).split(".")
        if value is not None and path[0] in cls.model_fields:
            for part in reversed(path):
                value = {part: value}
            flags = merge(flags, value)
    given = merge(flags, parse_overrides(params.get("overrides")))
    config_file = params.get("config")
    if resume_from is None:
        return load_config(cls, config_file, given)
    given = merge(read_yaml(config_file) if config_file else {}, given)
    saved = read_saved_config(resume_from)
    return resumed_config(cls, saved.get(section, {}) if section else saved, given, str(resume_from))


def resumed_list(given: str | None, default: str, resume_from: Path | None, key: str, option: str,
                 parse: Any) -> list[Any]:
    """A list option of a sweep: parsed when given; on resume the saved list, which a given one must equal."""
    from selfcorrect.runs import read_saved_config

    chosen = parse(given if given is not None else default)
    if resume_from is None:
        return chosen
    saved = read_saved_config(resume_from).get(key)
    if given is not None and chosen != saved:
        raise SelfCorrectError(f"cannot resume {resume_from}: {option} {given} contradicts its saved {key} {saved}; "
                               f"leave it out to continue the sweep as it was, or start a new --out")
    return saved


def parse_ints(text: str, option: str) -> list[int]:
    """`"0,1,2"` -> `[0, 1, 2]` for a comma-separated option such as --seeds; anything else is one clear error."""
    try:
        values = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise SelfCorrectError(f"{option} must be a comma-separated list of integers, got {text!r}") from None
    if not values:
        raise SelfCorrectError(f"{option} is empty")
    return values
