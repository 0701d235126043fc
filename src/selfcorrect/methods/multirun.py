"""What every comparison over arms and seeds shares (`stasc sweep`, `insec compare`): each run in its own folder,
a finished one read back instead of rerun, and mean ± std over seeds."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from selfcorrect.runs import RunFolder


def finished_or_run(run: Callable[..., dict[str, Any]], config: Any, folder: Path, resume: bool,
                    quiet: bool) -> dict[str, Any]:
    """The run's summary.json when it finished earlier; otherwise `run(config, folder)`, continued if asked."""
    run_folder = RunFolder(folder)
    if run_folder.finished:
        return dict(run_folder.read_summary())
    return run(config, folder, resume=resume and folder.exists(), quiet=quiet)


def mean_std(values: list[float | None]) -> dict[str, float] | None:
    """Mean, std (ddof=1; 0 for one value) and n of the values that exist; None when none does."""
    values = [v for v in values if v is not None]
    if not values:
        return None
    return {"mean": float(np.mean(values)), "std": float(np.std(values, ddof=1)) if len(values) > 1 else 0.0,
            "n": len(values)}
