"""Readers that turn benchmark files into `Example`s, and the one rule for carving splits out of a single file.

Every reader keeps each record's line number, so a broken line or a missing field becomes one error that names the
file, the line and the field, rather than a KeyError deep inside a run.
"""

from __future__ import annotations

import csv
import json
import random
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, TextIO

from selfcorrect.errors import SelfCorrectError
from selfcorrect.tasks.base import SPLITS
from selfcorrect.trajectory import Example

#: Which record key(s) feed each Example slot: "id", "gold", "metadata.<name>" or a prompt field name.
#: A list of keys feeds the slot a list of values (e.g. `"options": ["ans0", "ans1", "ans2"]`).
FieldMap = Mapping[str, str | Sequence[str]]
#: Per-slot converters; a ValueError, TypeError or KeyError they raise is reported against the record's line.
Converters = Mapping[str, Callable[[Any], Any]]


class Record(dict[str, Any]):
    """A dict that remembers the line it was read from (None for records from the hub)."""

    def __init__(self, data: Mapping[str, Any], line: int | None = None) -> None:
        super().__init__(data)
        self.line = line


def location(source: str, record: Mapping[str, Any], index: int) -> str:
    """"data.jsonl, line 12" for file records, "hub:x, record 12" for records that have no line."""
    line = getattr(record, "line", None)
    return f"{source}, line {line}" if line is not None else f"{source}, record {index + 1}"


def _open(path: Path) -> TextIO:
    try:
        return path.open(encoding="utf-8-sig", newline="")
    except FileNotFoundError:
        raise SelfCorrectError(f"{path}: no such file") from None
    except OSError as exc:
        raise SelfCorrectError(f"{path}: cannot read it ({exc.strerror})") from None


def parse_object(text: str, source: str, first_line: int = 1) -> dict[str, Any]:
    """One JSON object from `text`, which starts at `first_line` of `source`; else one error naming the line."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise SelfCorrectError(f"{source}, line {first_line + exc.lineno - 1}: broken JSON ({exc.msg})") from None
    if not isinstance(data, dict):
        raise SelfCorrectError(f"{source}, line {first_line}: expected a JSON object, got {type(data).__name__}")
    return data


def read_jsonl(path: str | Path) -> list[Record]:
    """One JSON object per line; blank lines are skipped."""
    path = Path(path)
    records = []
    with _open(path) as handle:
        try:
            for number, line in enumerate(handle, start=1):
                if not line.strip():
                    continue
                records.append(Record(parse_object(line.rstrip("\r\n"), str(path), number), number))
        except UnicodeDecodeError:
            raise SelfCorrectError(f"{path}: not UTF-8 text") from None
    return _some(records, path)


def read_csv(path: str | Path) -> list[Record]:
    """A CSV file with a header row; every row must have exactly the header's columns."""
    path = Path(path)
    records = []
    with _open(path) as handle:
        try:
            reader = csv.DictReader(handle)
            columns = reader.fieldnames
            if not columns:
                raise SelfCorrectError(f"{path}: no header row")
            for row in reader:
                if None in row or None in row.values():
                    raise SelfCorrectError(f"{path}, line {reader.line_num}: expected {len(columns)} columns "
                                           f"({', '.join(columns)})")
                records.append(Record(row, reader.line_num))
        except UnicodeDecodeError:
            raise SelfCorrectError(f"{path}: not UTF-8 text") from None
        except csv.Error as exc:
            raise SelfCorrectError(f"{path}, line {reader.line_num}: broken CSV ({exc})") from None
    return _some(records, path)


def _some(records: list[Record], path: Path) -> list[Record]:
    """A file without a single record is a mistake (a wrong path, a failed export), never a run of 0 examples."""
    if not records:
        raise SelfCorrectError(f"{path}: no records (the file is empty or holds only blank lines or a header)")
    return records


def read_records(path: str | Path) -> list[Record]:
    """Read a .jsonl or .csv file, chosen by its suffix."""
    path = Path(path)
    readers = {".jsonl": read_jsonl, ".csv": read_csv}
    if path.suffix.lower() not in readers:
        raise SelfCorrectError(f"{path}: expected a .jsonl or .csv file")
    return readers[path.suffix.lower()](path)


DATA_DIR = Path(__file__).resolve().parent.parent / "data"
"""The benchmark files shipped inside the package (see its README.md), found beside the code in a clone and in a
wheel alike, so a task needs no path to run."""


def bundled(relative: str) -> Path:
    """A file or folder under the shipped data, e.g. `bundled("gsm8k/test.jsonl")`."""
    return DATA_DIR / relative


def load_hub(hub_id: str, config: str | None = None, split: str = "test") -> list[Record]:
    """The records of one split of a `datasets` hub dataset (needs network or a warm hub cache)."""
    try:
        import datasets
    except ImportError:
        raise SelfCorrectError("hub_id= needs the 'datasets' package (pip install datasets)") from None
    try:
        dataset = datasets.load_dataset(hub_id, config, split=split)
    except Exception as exc:  # the hub raises many types (network, missing config, missing split): one message
        raise SelfCorrectError(f"cannot load {hub_id!r} (config {config!r}, split {split!r}) from the hub: "
                               f"{exc}") from None
    return [Record(row) for row in dataset]


def _value(record: Mapping[str, Any], key: str, where: str) -> Any:
    if key not in record:
        raise SelfCorrectError(f"{where}: missing field {key!r}")
    return record[key]


def require_text(value: Any, key: str, where: str) -> str:
    """A value that goes into a prompt must be text: a number, a list or null there is a broken record, not a
    question, and formatting it anyway would run a benchmark on `None`."""
    if not isinstance(value, str):
        shown = repr(value) if len(repr(value)) <= 40 else repr(value)[:37] + "..."
        raise SelfCorrectError(f"{where}: field {key!r}: expected text, got {type(value).__name__} {shown}")
    return value


def examples_from_records(records: Sequence[Mapping[str, Any]], field_map: FieldMap, source: str, *,
                          id_prefix: str | None = None, convert: Converters | None = None) -> list[Example]:
    """Build Examples through a field map, e.g. `{"question": "q", "gold": "answer", "id": "uid"}`.

    Record keys that feed no slot go to metadata, so nothing in the file is lost. Without an "id" slot the id is
    `<id_prefix>-<index in file>` (prefix: the file's stem), stable across runs as long as the file is.
    """
    prefix = id_prefix if id_prefix is not None else Path(source).stem
    convert = convert or {}
    used = {key for keys in field_map.values() for key in ([keys] if isinstance(keys, str) else keys)}
    examples: list[Example] = []
    first_seen: dict[str, str] = {}
    for index, record in enumerate(records):
        where = location(source, record, index)
        slots: dict[str, Any] = {}
        for slot, keys in field_map.items():
            value = (_value(record, keys, where) if isinstance(keys, str)
                     else [_value(record, key, where) for key in keys])
            if slot in convert:
                try:
                    value = convert[slot](value)
                except (ValueError, TypeError, KeyError) as exc:
                    named = keys if isinstance(keys, str) else ", ".join(keys)
                    why = f"missing key {exc.args[0]!r}" if isinstance(exc, KeyError) else str(exc)
                    raise SelfCorrectError(f"{where}: field {named!r}: {why}") from None
            elif _is_prompt_field(slot):
                value = (require_text(value, keys, where) if isinstance(keys, str)
                         else [require_text(v, key, where) for v, key in zip(value, keys, strict=True)])
            slots[slot] = value
        example_id = str(slots.pop("id")) if "id" in slots else f"{prefix}-{index}"
        if example_id in first_seen:
            raise SelfCorrectError(f"{where}: duplicate id {example_id!r} (first at {first_seen[example_id]})")
        first_seen[example_id] = where
        metadata = {key: value for key, value in record.items() if key not in used}
        metadata.update({slot.removeprefix("metadata."): v for slot, v in slots.items()
                         if slot.startswith("metadata.")})
        fields = {slot: v for slot, v in slots.items() if _is_prompt_field(slot)}
        examples.append(Example(id=example_id, fields=fields, gold=slots.get("gold"), metadata=metadata))
    return examples


def prompt_location(source: str, record: Mapping[str, Any], index: int, keys: Sequence[str]) -> str:
    """The record's location plus, of the `keys` that feed its prompt, the one holding the most text
    ("data.jsonl, line 12, field 'question'"): what to shorten when the prompt is longer than the model's context."""
    where = location(source, record, index)
    longest = max(keys, key=lambda key: len(str(record.get(key, ""))), default=None)
    return f"{where}, field {longest!r}" if longest is not None else where


def prompt_keys(field_map: FieldMap) -> list[str]:
    """The record keys that feed the prompt through `field_map`."""
    return [key for slot, keys in field_map.items() if _is_prompt_field(slot)
            for key in ([keys] if isinstance(keys, str) else keys)]


def _is_prompt_field(slot: str) -> bool:
    """Slots other than id, gold and metadata feed the prompt."""
    return slot not in ("id", "gold") and not slot.startswith("metadata.")


def check_splits(splits: Mapping[str, int]) -> dict[str, int]:
    """Validate a `splits={"train": 500, "test": 500}` option before any file is read."""
    unknown = sorted(set(splits) - set(SPLITS))
    if unknown:
        raise SelfCorrectError(f"unknown split {unknown[0]!r} in splits=; splits are {', '.join(SPLITS)}")
    for name, size in splits.items():
        if isinstance(size, bool) or not isinstance(size, int) or size < 1:
            raise SelfCorrectError(f"splits={dict(splits)}: the size of {name!r} must be a positive integer")
    return dict(splits)


def carve_splits(examples: Sequence[Example], splits: Mapping[str, int], seed: int,
                 source: str) -> dict[str, list[Example]]:
    """Shuffle once with `seed`, then cut disjoint train, validation, test subsets in that order.

    A file is one pool of examples; this is how it becomes several splits reproducibly: the same file, sizes and
    seed always give the same subsets, whoever runs it.
    """
    sizes = check_splits(splits)
    total = sum(sizes.values())
    if total > len(examples):
        raise SelfCorrectError(f"{source} has {len(examples)} examples, fewer than the {total} that "
                               f"splits={sizes} asks for")
    order = list(range(len(examples)))
    random.Random(seed).shuffle(order)
    carved: dict[str, list[Example]] = {}
    start = 0
    for name in SPLITS:
        if name in sizes:
            carved[name] = [examples[i] for i in order[start:start + sizes[name]]]
            start += sizes[name]
    return carved
