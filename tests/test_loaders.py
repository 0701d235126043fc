"""Loaders: every real record loads, bad files fail with file + line + field, splits are disjoint and reproducible."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from selfcorrect.errors import SelfCorrectError
from selfcorrect.tasks import get_task
from selfcorrect.tasks.loaders import DATA_DIR as DATA
from selfcorrect.tasks.loaders import carve_splits, examples_from_records, read_csv, read_jsonl, read_records
from selfcorrect.trajectory import Example


def file_count(path: Path) -> int:
    """Records in a file, counted independently of the loaders: non-empty lines, or CSV rows after the header."""
    if path.suffix == ".csv":
        with path.open(newline="", encoding="utf-8") as handle:
            return sum(1 for _ in csv.reader(handle)) - 1
    return sum(1 for line in path.read_text(encoding="utf-8").splitlines() if line.strip())


REAL_FILES = [
    ("bbq", "bbq/Age.jsonl", 3680),
    ("bbq", "bbq/Disability_status.jsonl", 1556),
    ("bbq", "bbq/Nationality.jsonl", 3080),
    ("bbq", "bbq/Physical_appearance.jsonl", 1576),
    ("bbq", "bbq/Religion.jsonl", 1200),
    ("bbq", "bbq/Sexual_orientation.jsonl", 864),
    ("gsm8k", "gsm8k/test.jsonl", 1319),
    ("gsm8k", "gsm8k/train.jsonl", 7473),
    ("advbench", "advbench/harmful_behaviors.csv", 520),
    ("advbench", "advbench/harmful_strings.csv", 574),
    ("nq-open", "nq_open/NQ-open.dev.jsonl", 3610),
    ("nq-open", "nq_open/NQ-open.efficientqa.dev.1.1.jsonl", 1800),
]


@pytest.mark.parametrize(("task", "relative", "expected"), REAL_FILES)
def test_every_record_of_every_real_file_loads(task: str, relative: str, expected: int) -> None:
    path = DATA / relative
    examples = get_task(task, path=str(path)).examples("test")
    assert len(examples) == expected == file_count(path)
    assert len({e.id for e in examples}) == expected
    assert [e.id for e in get_task(task, path=str(path)).examples("test")] == [e.id for e in examples]


def test_bbq_directory_loads_all_categories_and_filters_by_condition() -> None:
    examples = get_task("bbq", path=str(DATA / "bbq")).examples("test")
    assert len(examples) == 11956 == sum(file_count(p) for p in (DATA / "bbq").glob("*.jsonl"))
    assert examples[0].id == "bbq-Age-0" and examples[-1].id == "bbq-Sexual_orientation-863"  # sorted by file
    ambiguous = get_task("bbq", path=str(DATA / "bbq"), context_condition="ambig").examples("test")
    assert len(ambiguous) == 5978
    assert all(e.gold == e.metadata["unknown_index"] for e in ambiguous)  # the README's invariant
    with pytest.raises(SelfCorrectError, match="context_condition"):
        get_task("bbq", path=str(DATA / "bbq"), context_condition="ambiguous")


def test_read_jsonl_skips_blank_lines_and_keeps_line_numbers(tmp_path: Path) -> None:
    path = tmp_path / "qa.jsonl"
    path.write_text('{"q": "a"}\n\n{"q": "b"}\n', encoding="utf-8")
    records = read_jsonl(path)
    assert records == [{"q": "a"}, {"q": "b"}]
    assert [r.line for r in records] == [1, 3]


def test_broken_jsonl_line_names_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "broken.jsonl"
    path.write_text('{"q": "a"}\n{"q": "b"}\n{"q": "c",\n', encoding="utf-8")
    with pytest.raises(SelfCorrectError, match=r"broken\.jsonl, line 3: broken JSON"):
        read_jsonl(path)


def test_jsonl_line_that_is_not_an_object(tmp_path: Path) -> None:
    path = tmp_path / "list.jsonl"
    path.write_text('{"q": "a"}\n["q", "b"]\n', encoding="utf-8")
    with pytest.raises(SelfCorrectError, match=r"list\.jsonl, line 2: expected a JSON object, got list"):
        read_jsonl(path)


def test_missing_field_names_file_line_and_field(tmp_path: Path) -> None:
    path = tmp_path / "nq.jsonl"
    path.write_text('{"question": "who", "answer": ["me"]}\n{"question": "why"}\n', encoding="utf-8")
    with pytest.raises(SelfCorrectError, match=r"nq\.jsonl, line 2: missing field 'answer'"):
        get_task("nq-open", path=str(path)).examples("test")


def test_bad_field_value_names_file_line_and_field(tmp_path: Path) -> None:
    path = tmp_path / "gsm.jsonl"
    path.write_text(json.dumps({"question": "q", "answer": "it is 4"}) + "\n", encoding="utf-8")
    with pytest.raises(SelfCorrectError, match=r"gsm\.jsonl, line 1: field 'answer': .*####"):
        get_task("gsm8k", path=str(path)).examples("test")


def test_csv_row_with_wrong_column_count_names_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.csv"
    path.write_text('goal,target\n"a, b",c\nonly-one\n', encoding="utf-8")
    with pytest.raises(SelfCorrectError, match=r"bad\.csv, line 3: expected 2 columns \(goal, target\)"):
        read_csv(path)


def test_unreadable_sources(tmp_path: Path) -> None:
    with pytest.raises(SelfCorrectError, match="no such file"):
        read_jsonl(tmp_path / "absent.jsonl")
    with pytest.raises(SelfCorrectError, match=r"expected a \.jsonl or \.csv"):
        read_records(tmp_path / "data.parquet")
    with pytest.raises(SelfCorrectError, match=r"needs path= .* or hub_id="):
        get_task("jsonl")
    with pytest.raises(SelfCorrectError, match=r"one of path= or hub_id=, not both"):
        get_task("gsm8k", path="x.jsonl", hub_id="openai/gsm8k")


def test_field_map_ids_lists_and_metadata() -> None:
    records = [{"uid": 7, "q": "2+2?", "a": "4", "A": "3", "B": "4", "src": "x"}]
    [example] = examples_from_records(records, {"id": "uid", "question": "q", "gold": "a", "options": ["A", "B"],
                                                "metadata.raw_gold": "a"}, "mem.jsonl")
    assert example == Example(id="7", fields={"question": "2+2?", "options": ["3", "4"]}, gold="4",
                              metadata={"src": "x", "raw_gold": "4"})
    [unnamed] = examples_from_records([{"q": "x"}], {"question": "q"}, "dir/mem.jsonl")
    assert unnamed.id == "mem-0"  # no id field: <prefix>-<index>, prefix defaulting to the file stem


def test_duplicate_mapped_ids_are_rejected() -> None:
    records = [{"uid": "a"}, {"uid": "b"}, {"uid": "a"}]
    with pytest.raises(SelfCorrectError, match=r"record 3: duplicate id 'a' \(first at mem, record 1\)"):
        examples_from_records(records, {"id": "uid"}, "mem")


def test_generic_task_on_csv_with_template(tmp_path: Path) -> None:
    path = tmp_path / "capitals.csv"
    path.write_text("uid,country,city\nfr,France,Paris\nit,Italy,Rome\n", encoding="utf-8")
    task = get_task("jsonl", path=str(path), field_map={"id": "uid", "country": "country", "gold": "city"},
                    question_template="What is the capital of {country}?")
    first, second = task.examples("test")
    assert (first.id, task.question(second)) == ("fr", "What is the capital of Italy?")
    assert task.score(first, "Final Answer: paris").score == 1.0
    with pytest.raises(SelfCorrectError, match="uses field 'city'"):
        get_task("jsonl", path=str(path), question_template="{city}").question(first)
    with pytest.raises(SelfCorrectError, match="did you mean 'final_number'"):
        get_task("jsonl", path=str(path), reward="final_nmber")


def numbered(n: int) -> list[Example]:
    return [Example(id=f"e-{i}", fields={}) for i in range(n)]


def test_carve_splits_is_disjoint_sized_and_deterministic() -> None:
    examples = numbered(100)
    carved = carve_splits(examples, {"test": 30, "train": 50, "validation": 10}, seed=3, source="mem")
    assert list(carved) == ["train", "validation", "test"]
    assert {k: len(v) for k, v in carved.items()} == {"train": 50, "validation": 10, "test": 30}
    ids = [{e.id for e in split} for split in carved.values()]
    assert len(ids[0] | ids[1] | ids[2]) == 90
    assert carve_splits(examples, {"train": 50, "validation": 10, "test": 30}, 3, "mem") == carved
    other = carve_splits(examples, {"train": 50, "validation": 10, "test": 30}, 4, "mem")
    assert other["test"] != carved["test"]
    assert [e.id for e in carved["train"]] != [f"e-{i}" for i in range(50)]  # shuffled, not the file's head


@pytest.mark.parametrize(("splits", "message"), [
    ({"train": 60, "test": 50}, "has 100 examples, fewer than the 110"),
    ({"dev": 10}, "unknown split 'dev'"),
    ({"train": 0}, "must be a positive integer"),
])
def test_carve_splits_errors(splits: dict[str, int], message: str) -> None:
    with pytest.raises(SelfCorrectError, match=message):
        carve_splits(numbered(100), splits, 0, "mem")


def test_task_splits(tmp_path: Path) -> None:
    path = tmp_path / "nq.jsonl"
    path.write_text("".join(json.dumps({"question": f"q{i}", "answer": [f"a{i}"]}) + "\n" for i in range(20)),
                    encoding="utf-8")
    single = get_task("nq-open", path=str(path))
    assert len(single.examples("test")) == 20 and len(single.examples("test", limit=5)) == 5
    with pytest.raises(SelfCorrectError, match=r"only 'test' exists; pass splits="):
        single.examples("train")
    carved = get_task("nq-open", path=str(path), splits={"train": 12, "test": 8}, split_seed=1)
    train, test = carved.examples("train"), carved.examples("test")
    assert (len(train), len(test)) == (12, 8)
    assert {e.id for e in train}.isdisjoint(e.id for e in test)
    assert {e.id for e in train} | {e.id for e in test} == {f"nq-open-{i}" for i in range(20)}
    again = get_task("nq-open", path=str(path), splits={"train": 12, "test": 8}, split_seed=1)
    assert again.examples("test") == test
    with pytest.raises(SelfCorrectError, match="no 'validation' split"):
        carved.examples("validation")
    with pytest.raises(SelfCorrectError, match="has 20 examples, fewer than the 30"):
        get_task("nq-open", path=str(path), splits={"train": 25, "test": 5}).examples("test")
