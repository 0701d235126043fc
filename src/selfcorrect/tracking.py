"""Optional experiment trackers (wandb, mlflow, tensorboard), imported only when a run asks for one.

The run folder is always the record; a tracker is a mirror of the same numbers for people who watch dashboards.
Each metric is logged with an explicit step (the iteration), so a per-step history is kept rather than overwritten.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from selfcorrect.errors import SelfCorrectError

TRACKERS = ("wandb", "mlflow", "tensorboard")
_PACKAGES = {"wandb": "wandb", "mlflow": "mlflow", "tensorboard": "torch.utils.tensorboard"}


def flatten(metrics: dict[str, Any], prefix: str = "") -> dict[str, float]:
    """`{"test@T1": {"delta": {"value": 0.1}}}` -> `{"test@T1/delta": 0.1}`; non-numeric leaves are dropped."""
    flat: dict[str, float] = {}
    for key, value in metrics.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            if isinstance(value.get("value"), int | float):
                flat[name] = float(value["value"])
            else:
                flat.update(flatten(value, f"{name}/"))
        elif isinstance(value, int | float) and not isinstance(value, bool):
            flat[name] = float(value)
    return flat


class Tracker:
    """`Tracker(None, ...)` does nothing; otherwise it opens one run of the named tracker."""

    def __init__(self, report_to: str | None, run_dir: Path, config: dict[str, Any]):
        self.kind = report_to
        self._handle: Any = None
        if report_to is None:
            return
        if report_to not in TRACKERS:
            raise SelfCorrectError(f"unknown tracker {report_to!r}; known: {', '.join(TRACKERS)}")
        try:
            if report_to == "wandb":
                import wandb

                self._handle = wandb.init(name=run_dir.name, dir=str(run_dir), config=config)
            elif report_to == "mlflow":
                import mlflow

                mlflow.start_run(run_name=run_dir.name)
                mlflow.log_params(flatten(config))
                self._handle = mlflow
            else:
                from torch.utils.tensorboard import SummaryWriter

                self._handle = SummaryWriter(log_dir=str(run_dir / "tensorboard"))
        except ImportError:
            raise SelfCorrectError(f"--report-to {report_to} needs {_PACKAGES[report_to]}: "
                                   "pip install 'selfcorrect[track]'") from None

    def log(self, metrics: dict[str, Any], step: int) -> None:
        if self._handle is None:
            return
        flat = flatten(metrics)
        if self.kind == "wandb":
            self._handle.log(flat, step=step)
        elif self.kind == "mlflow":
            self._handle.log_metrics(flat, step=step)
        else:
            for name, value in flat.items():
                self._handle.add_scalar(name, value, step)

    def close(self) -> None:
        if self._handle is None:
            return
        if self.kind == "wandb":
            self._handle.finish()
        elif self.kind == "mlflow":
            self._handle.end_run()
        else:
            self._handle.close()
