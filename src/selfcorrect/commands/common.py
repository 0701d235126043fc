"""Options and config plumbing shared by every command module."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

Quiet = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars.")]
Seed = Annotated[int, typer.Option(help="The one seed that decides everything.")]
SeedOverride = Annotated[int | None, typer.Option("--seed", help="The one seed that decides everything.")]
Resume = Annotated[bool, typer.Option(help="Continue an interrupted run from its last finished step.")]
ConfigFile = Annotated[Path | None, typer.Option("--config", help="YAML config; CLI flags override it.")]
Overrides = Annotated[list[str] | None, typer.Option("--set", help="Override any config key: --set key=value.")]


def build_config(cls: Any, config_file: Path | None, overrides: list[str] | None, flags: dict[str, Any]) -> Any:
    """Defaults < YAML file < explicit CLI flags < --set overrides."""
    from selfcorrect.config import load_config, merge, parse_overrides

    given = {k: v for k, v in flags.items() if v is not None}
    return load_config(cls, config_file, merge(given, parse_overrides(overrides)))
