"""User-facing errors: bad input becomes one clear line and exit code 2, never a traceback."""

from __future__ import annotations


class SelfCorrectError(Exception):
    """An error the user can fix (bad file, missing field, unknown name). The CLI prints it as one line, exit 2."""

    exit_code = 2


def suggest(name: str, known: list[str] | tuple[str, ...]) -> str:
    """' (did you mean X?)' for a near miss, so a typo in a task or backend name is a one-line fix."""
    import difflib

    close = difflib.get_close_matches(name, list(known), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""
