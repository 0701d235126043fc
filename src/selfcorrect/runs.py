"""Run folders: `config.yaml` (resolved), `samples.jsonl` (one trajectory a line), `summary.json`.

`samples.jsonl` is appended and flushed after every batch, so a killed run loses at most the batch in flight, and
`--resume` skips the ids already written. A line cut off by a kill is dropped on resume (the file is truncated back
to its last complete line), so every id ends up exactly once. Every other file is written to a temporary file and
renamed, so a reader never sees half a result.
"""

from __future__ import annotations

import functools
import inspect
import json
import os
import platform
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

from selfcorrect.errors import SelfCorrectError
from selfcorrect.summary import SUMMARY_SCHEMA_VERSION, Summary, upgrade
from selfcorrect.tasks.loaders import parse_object
from selfcorrect.trajectory import Trajectory

F = TypeVar("F", bound=Callable[..., Any])

CONFIG_FILE = "config.yaml"
SAMPLES_FILE = "samples.jsonl"
SUMMARY_FILE = "summary.json"


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write via a temporary file in the same folder and rename: readers see the old file or the new one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.fchmod(fd, 0o666 & ~umask)  # mkstemp makes 0600 files; results are meant to be shared like any other
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _holds_results(path: Path) -> bool:
    """Anything a resume could build on: a file other than the config and the hidden temporary files."""
    return any(f.is_file() and f.name != CONFIG_FILE and not f.name.startswith(".") for f in path.rglob("*"))


@contextmanager
def fresh_output(out: str | Path, resume: bool) -> Iterator[None]:
    """A new output folder that stops on bad input (a `SelfCorrectError`) before it holds any result is removed,
    with any parent folders it created, so a refused run leaves nothing to trip over or mistake for a run.

    Folders with results stay for `--resume` (a server outage mid-run must not cost the finished part), and so does
    anything that existed before the command.
    """
    path = Path(out)
    created = next((p for p in reversed([path, *path.parents]) if not p.exists()), None)
    was_empty = path.is_dir() and not any(path.iterdir())
    try:
        yield
    except SelfCorrectError:
        if not resume and path.is_dir() and not _holds_results(path):
            if created is not None:
                shutil.rmtree(created, ignore_errors=True)
            elif was_empty:
                for child in path.iterdir():
                    if child.is_dir():
                        shutil.rmtree(child)
                    else:
                        child.unlink()
        raise


def removes_fresh_output_on_error(run: F) -> F:
    """Wrap a `run_*(config, out, resume=..., ...)` function in `fresh_output(out, resume)`."""
    signature = inspect.signature(run)

    @functools.wraps(run)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        bound = signature.bind(*args, **kwargs)
        bound.apply_defaults()
        with fresh_output(bound.arguments["out"], bound.arguments["resume"]):
            return run(*args, **kwargs)

    return wrapper  # type: ignore[return-value]


def write_json(path: str | Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, ensure_ascii=False) + "\n")


def write_yaml(path: str | Path, obj: Any) -> None:
    import yaml

    atomic_write_text(path, yaml.safe_dump(obj, sort_keys=False, allow_unicode=True))


def git_hash() -> str | None:
    """The commit of the selfcorrect checkout (None when installed from a wheel or git is missing)."""
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, capture_output=True,
                             text=True, timeout=5, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def environment_info() -> dict[str, Any]:
    """Versions that can change results; recorded in every summary."""
    from importlib import metadata

    import selfcorrect

    versions = {"python": platform.python_version(), "selfcorrect": selfcorrect.__version__}
    for pkg in ("torch", "transformers", "trl", "peft", "numpy"):
        try:
            versions[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            continue
    return {"versions": versions, "platform": platform.platform(), "git_hash": git_hash(),
            "date": datetime.now(UTC).isoformat(timespec="seconds")}


def read_json(path: str | Path) -> dict[str, Any]:
    """A result file (summary.json, results.json) read back: missing, empty or broken is one line naming it."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SelfCorrectError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise SelfCorrectError(f"{path}: cannot read it ({exc})") from None
    if not text.strip():
        raise SelfCorrectError(f"{path}: empty file")
    return parse_object(text, str(path))


def read_saved_config(out: str | Path) -> dict[str, Any]:
    """The config.yaml of a run folder, for `--resume` with nothing but `--out`."""
    from selfcorrect.config import read_yaml

    config_file = Path(out) / CONFIG_FILE
    if not config_file.is_file():
        raise SelfCorrectError(f"cannot resume: {config_file} does not exist (is {out} a run folder?)")
    return read_yaml(config_file)


def read_trajectories(path: str | Path) -> list[Trajectory]:
    """The trajectories of a JSONL file, in file order; a line that is not one is one error naming file and line."""
    trajectories = []
    with Path(path).open() as handle:
        for number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                trajectories.append(Trajectory.from_json(line))
            except (ValueError, KeyError, TypeError) as exc:
                raise SelfCorrectError(f"{path} line {number}: not a trajectory ({exc})") from None
    return trajectories


class RunFolder:
    """One run's folder. Create with `RunFolder.open(out, config, resume=...)`."""

    def __init__(self, path: Path):
        self.path = path

    @property
    def samples_path(self) -> Path:
        return self.path / SAMPLES_FILE

    @classmethod
    def open(cls, out: str | Path, config: dict[str, Any], resume: bool = False,
             ignore_on_resume: Iterable[str] = ("quiet", "resume")) -> RunFolder:
        """Start a run in `out`, or continue it with `resume=True` (the config must then be the same).

        A key the saved config lacks was added to selfcorrect after the run began, which ran under that key's
        default; the CLI has already checked a given value against it (`config.resumed_config`), so it is not
        compared here and older run folders keep resuming.
        """
        path = Path(out)
        config_file = path / CONFIG_FILE
        ignored = set(ignore_on_resume)
        if resume:
            if not config_file.is_file():
                raise SelfCorrectError(f"cannot resume: {config_file} does not exist")
            from selfcorrect.config import read_yaml

            saved = read_yaml(config_file)
            for key in sorted(saved):
                if key not in ignored and saved[key] != config.get(key):
                    raise SelfCorrectError(f"cannot resume {path}: config key {key!r} differs "
                                           f"(saved {saved[key]!r}, now {config.get(key)!r})")
        elif path.exists() and any(path.iterdir()):
            raise SelfCorrectError(f"output folder {path} already exists; pass --resume to continue it "
                                   "or choose another --out")
        path.mkdir(parents=True, exist_ok=True)
        if not resume:
            write_yaml(config_file, config)
        return cls(path)

    def _repair_tail(self) -> None:
        """Drop a last line that a kill cut off mid-write, so the file holds complete records only."""
        if not self.samples_path.exists():
            return
        data = self.samples_path.read_bytes()
        if data and not data.endswith(b"\n"):
            with self.samples_path.open("r+b") as handle:
                handle.truncate(data.rfind(b"\n") + 1)

    def read_samples(self) -> list[Trajectory]:
        """Every complete trajectory written so far, in file order."""
        self._repair_tail()
        return read_trajectories(self.samples_path) if self.samples_path.exists() else []

    def done_ids(self) -> set[str]:
        return {t.id for t in self.read_samples()}

    def append(self, trajectories: Iterable[Trajectory]) -> None:
        """Append one batch and flush it to disk before returning."""
        lines = "".join(t.to_json() + "\n" for t in trajectories)
        if not lines:
            return
        with self.samples_path.open("a") as handle:
            handle.write(lines)
            handle.flush()
            os.fsync(handle.fileno())

    @property
    def summary_path(self) -> Path:
        return self.path / SUMMARY_FILE

    @property
    def finished(self) -> bool:
        """A run is finished once its summary is written (the last thing every command does)."""
        return self.summary_path.is_file()

    def write_summary(self, summary: dict[str, Any]) -> Path:
        """`summary.json`, with the schema version and the environment that can change results."""
        write_json(self.summary_path, {"schema_version": SUMMARY_SCHEMA_VERSION, **summary,
                                       "environment": environment_info()})
        return self.summary_path

    def read_summary(self) -> Summary:
        """`summary.json` read back in the current schema; a missing, broken or newer file is one line naming it."""
        if not self.finished:
            raise SelfCorrectError(f"{self.path} has no {SUMMARY_FILE} (not a finished run folder)")
        try:
            return upgrade(read_json(self.summary_path))  # type: ignore[return-value]
        except ValueError as exc:
            raise SelfCorrectError(f"{self.summary_path}: {exc}") from None
