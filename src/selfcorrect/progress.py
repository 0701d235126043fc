"""Progress display: one bar per phase (e.g. "round 2"), never one per batch; `quiet=True` shows nothing."""

from __future__ import annotations

from typing import Any


class Progress:
    """A thin wrapper over rich's progress so commands say `add(phase, total)` and `advance(phase, n)`."""

    def __init__(self, quiet: bool = False):
        self.quiet = quiet
        self._bars: dict[str, Any] = {}
        self._progress: Any = None

    def __enter__(self) -> Progress:
        if not self.quiet:
            from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn
            from rich.progress import Progress as RichProgress

            self._progress = RichProgress(TextColumn("{task.description:<28}"), BarColumn(), MofNCompleteColumn(),
                                          TimeElapsedColumn(), transient=False)
            self._progress.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._progress is not None:
            self._progress.__exit__(*exc)

    def add(self, phase: str, total: int) -> None:
        if self._progress is not None and phase not in self._bars:
            self._bars[phase] = self._progress.add_task(phase, total=total)

    def advance(self, phase: str, amount: int = 1) -> None:
        if self._progress is None:
            return
        if phase not in self._bars:
            self.add(phase, 0)
        self._progress.advance(self._bars[phase], amount)
