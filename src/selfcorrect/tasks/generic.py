"""File-backed tasks: `FileTask`, the machinery every real-data task shares, and `GenericTask` for any JSONL/CSV.

A task reads ONE source (a local file or one split of a hub dataset). Without `splits` that source is the "test"
split; with `splits={"train": 500, "test": 500}` it is shuffled with `split_seed` and carved into disjoint subsets,
so training never sees a test item and every run with the same options sees the same items.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

from selfcorrect.errors import SelfCorrectError
from selfcorrect.rewards import get_reward
from selfcorrect.tasks.base import SPLITS, Task
from selfcorrect.tasks.corruptions import MistakeKit, answer_swap_kit, first_alias
from selfcorrect.tasks.loaders import (
    Converters,
    FieldMap,
    Record,
    bundled,
    carve_splits,
    check_splits,
    examples_from_records,
    load_hub,
    prompt_keys,
    prompt_location,
    read_records,
)
from selfcorrect.trajectory import Example, Verdict


class FileTask(Task):
    """A task over one local .jsonl/.csv file or one hub split.

    Subclasses set `default_reward` and `field_map` (plus `convert` for values that need parsing); `reward=`
    overrides the reward per run, e.g. `in_accuracy_final` instead of `in_accuracy` on NQ-open. With `hub_id`,
    `hub_split` names the one hub split read (like a file); the hub's other splits are other sources.
    """

    default_reward: ClassVar[str]
    #: The shipped file (under selfcorrect/data) read when neither path= nor hub_id= is given; None = no default.
    default_path: ClassVar[str | None] = None
    field_map: ClassVar[FieldMap] = {}
    convert: ClassVar[Converters] = {}

    def __init__(self, path: str | None = None, hub_id: str | None = None, hub_config: str | None = None,
                 hub_split: str = "test", splits: dict[str, int] | None = None, split_seed: int = 0,
                 reward: str | None = None) -> None:
        if path is not None and hub_id is not None:
            raise SelfCorrectError(f"task {self.name!r} takes one of path= or hub_id=, not both")
        if path is None and hub_id is None:
            if self.default_path is None:
                raise SelfCorrectError(f"task {self.name!r} needs path= (a local .jsonl or .csv file) or hub_id= "
                                       f"(a datasets hub id)")
            path = str(bundled(self.default_path))
        self.path = Path(path) if path is not None else None
        self.hub_id = hub_id
        self.hub_config = hub_config
        self.hub_split = hub_split
        self.splits = check_splits(splits) if splits else None
        self.split_seed = split_seed
        self.reward_name = reward or self.default_reward
        self._reward = get_reward(self.reward_name)
        self._pool: dict[str, list[Example]] | None = None
        self._locations: dict[str, str] = {}

    @property
    def source(self) -> str:
        """How errors and run records name where the examples come from."""
        return str(self.path) if self.path is not None else f"hub:{self.hub_id}[{self.hub_split}]"

    def examples(self, split: str, limit: int | None = None) -> list[Example]:
        if split not in SPLITS:
            raise SelfCorrectError(f"unknown split {split!r}; splits are {', '.join(SPLITS)}")
        pool = self._split_pool()
        if split not in pool:
            if self.splits is None:
                raise SelfCorrectError(f"task {self.name!r}: {self.source} is a single split, so only 'test' "
                                       f"exists; pass splits={{'train': N, 'test': M}} to carve {split!r} from it")
            raise SelfCorrectError(f"task {self.name!r}: no {split!r} split; splits= carves only "
                                   f"{', '.join(pool)}")
        chosen = pool[split]
        return list(chosen if limit is None else chosen[:limit])

    def score(self, example: Example, text: str) -> Verdict:
        return self._reward(example, text)

    def describe(self) -> dict[str, Any]:
        where = {"path": str(self.path)} if self.path is not None else {
            "hub_id": self.hub_id, "hub_config": self.hub_config, "hub_split": self.hub_split}
        return {"name": self.name, **where, "splits": self.splits, "split_seed": self.split_seed,
                "reward": self.reward_name}

    def _split_pool(self) -> dict[str, list[Example]]:
        if self._pool is None:
            examples = self._load_examples()
            self._pool = ({"test": examples} if self.splits is None
                          else carve_splits(examples, self.splits, self.split_seed, self.source))
        return self._pool

    def _records(self) -> list[Record]:
        if self.path is not None:
            return read_records(self.path)
        assert self.hub_id is not None
        return load_hub(self.hub_id, self.hub_config, self.hub_split)

    def _field_map(self, records: list[Record]) -> FieldMap:
        """The field map for these records; a subclass whose files differ in columns picks one here."""
        return self.field_map

    def locate(self, example: Example) -> str | None:
        return self._locations.get(example.id)

    def _examples_from(self, records: list[Record], source: str, id_prefix: str) -> list[Example]:
        field_map = self._field_map(records)
        examples = examples_from_records(records, field_map, source, id_prefix=id_prefix, convert=self.convert)
        keys = prompt_keys(field_map)
        self._locations.update((example.id, prompt_location(source, record, index, keys))
                               for index, (record, example) in enumerate(zip(records, examples, strict=True)))
        return examples

    def _load_examples(self) -> list[Example]:
        """All examples of the source, in file order, before any split is carved."""
        return self._examples_from(self._records(), self.source, self.name)


class GenericTask(FileTask):
    """Any JSONL/CSV file: say which columns feed the prompt and the gold, which reward scores, how the prompt reads.

    `GenericTask(path="qa.csv", field_map={"question": "q", "gold": "answer", "id": "uid"}, reward="exact_match",
    question_template="Q: {question}\\nA:")`.
    """

    name = "jsonl"
    description = "any local .jsonl/.csv file (or hub split) with a field map, a reward and a question template"
    default_reward = "exact_match"

    def __init__(self, path: str | None = None, field_map: Mapping[str, Any] | None = None,
                 reward: str = "exact_match", question_template: str = "{question}", *, hub_id: str | None = None,
                 hub_config: str | None = None, hub_split: str = "test", splits: dict[str, int] | None = None,
                 split_seed: int = 0) -> None:
        self.mapping = dict(field_map) if field_map is not None else {"question": "question", "gold": "answer"}
        self.template = question_template
        super().__init__(path=path, hub_id=hub_id, hub_config=hub_config, hub_split=hub_split, splits=splits,
                         split_seed=split_seed, reward=reward)

    def _field_map(self, records: list[Record]) -> FieldMap:
        return self.mapping

    def question(self, example: Example) -> str:
        try:
            return self.template.format_map(example.fields)
        except KeyError as exc:
            raise SelfCorrectError(f"question_template {self.template!r} uses field {exc.args[0]!r}, but the "
                                   f"example's fields are {sorted(example.fields)}; add it to field_map") from None

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "field_map": self.mapping, "question_template": self.template}

    @classmethod
    def mistake_kit(cls, pool: Sequence[Example]) -> MistakeKit:
        return answer_swap_kit(pool, first_alias)
