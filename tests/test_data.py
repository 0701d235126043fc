"""The benchmark files shipped in selfcorrect/data: each matches the checksum its SOURCE.md records, carries its
license notice, and is what a task reads when it is given no path, while hub_id= still reaches the hub."""

from __future__ import annotations

import hashlib
import re
import sys
import types

import pytest

from selfcorrect.tasks import get_task
from selfcorrect.tasks.loaders import DATA_DIR

FOLDERS = ("bbq", "gsm8k", "advbench", "nq_open")


def recorded_checksums(folder: str) -> dict[str, str]:
    text = (DATA_DIR / folder / "SOURCE.md").read_text(encoding="utf-8")
    return dict(re.findall(r"^\| (\S+\.(?:jsonl|csv)) \| `([0-9a-f]{64})` \|$", text, flags=re.MULTILINE))


@pytest.mark.parametrize("folder", FOLDERS)
def test_every_data_file_matches_the_checksum_in_its_source_record(folder: str) -> None:
    recorded = recorded_checksums(folder)
    present = sorted(p.name for p in (DATA_DIR / folder).iterdir() if p.suffix in (".jsonl", ".csv"))
    assert sorted(recorded) == present and present
    for name, digest in recorded.items():
        assert hashlib.sha256((DATA_DIR / folder / name).read_bytes()).hexdigest() == digest, name


@pytest.mark.parametrize(("folder", "notice"), [("bbq", "creativecommons.org/licenses/by/4.0"),
                                                ("nq_open", "creativecommons.org/licenses/by-sa/3.0"),
                                                ("gsm8k", "Copyright (c) 2021 OpenAI"),
                                                ("advbench", "Copyright (c) 2023 Andy Zou")])
def test_every_folder_carries_its_license_notice(folder: str, notice: str) -> None:
    texts = [p.read_text(encoding="utf-8") for p in (DATA_DIR / folder).iterdir() if p.suffix in ("", ".md")]
    assert any(notice in text for text in texts)
    if "Copyright" in notice:  # MIT: the permission notice itself must travel with the copies
        assert "Permission is hereby granted" in (DATA_DIR / folder / "LICENSE").read_text(encoding="utf-8")


@pytest.mark.parametrize(("task", "first_id", "count"), [("bbq", "bbq-Age-0", 11956), ("gsm8k", "gsm8k-0", 1319),
                                                         ("nq-open", "nq-open-0", 3610),
                                                         ("advbench", "advbench-0", 520)])
def test_a_task_without_a_path_reads_the_shipped_file(task: str, first_id: str, count: int) -> None:
    examples = get_task(task).examples("test")
    assert len(examples) == count and examples[0].id == first_id
    assert get_task(task).describe()["path"].startswith(str(DATA_DIR))


def test_hub_id_still_reads_the_hub_instead_of_the_shipped_file(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []

    def load_dataset(hub_id, config, split):
        calls.append((hub_id, config, split))
        return [{"question": "What is 2 + 3?", "answer": "2 + 3 = 5\n#### 5"}]

    monkeypatch.setitem(sys.modules, "datasets", types.SimpleNamespace(load_dataset=load_dataset))
    task = get_task("gsm8k", hub_id="openai/gsm8k", hub_config="main")
    [example] = task.examples("test")
    assert calls == [("openai/gsm8k", "main", "test")]
    assert example.gold == "5" and task.describe()["hub_id"] == "openai/gsm8k" and "path" not in task.describe()


def test_a_wheel_ships_every_data_file() -> None:
    """The package-data globs of pyproject.toml cover every file under selfcorrect/data, so an installed wheel
    finds the same files a clone does."""
    import tomllib
    from fnmatch import fnmatch
    from pathlib import Path

    pyproject = tomllib.loads((Path(__file__).resolve().parents[1] / "pyproject.toml").read_text())
    globs = pyproject["tool"]["setuptools"]["package-data"]["selfcorrect"]
    files = [p.relative_to(DATA_DIR.parent).as_posix() for p in DATA_DIR.rglob("*") if p.is_file()]
    assert len(files) >= 19
    unshipped = [f for f in files if not any(fnmatch(f, g) and f.count("/") == g.count("/") for g in globs)]
    assert unshipped == []
