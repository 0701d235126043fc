"""BBQ: social-bias multiple-choice QA (Parrish et al., 2022), in the Checking-as-Context paper's format.

Besides the gold label, each example records which option is "unknown" and which names the stereotyped group, so
bias scores (how often a wrong answer is the stereotyped one) can be computed from saved trajectories later.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

from selfcorrect.errors import SelfCorrectError
from selfcorrect.tasks.corruptions import MistakeKit, option_kit
from selfcorrect.tasks.generic import FileTask
from selfcorrect.tasks.loaders import Converters, FieldMap, read_records
from selfcorrect.trajectory import Example

OPTION_KEYS = ("ans0", "ans1", "ans2")
CONTEXT_CONDITIONS = ("ambig", "disambig")


def _label(label: Any) -> int:
    if isinstance(label, bool) or not isinstance(label, int) or not 0 <= label < len(OPTION_KEYS):
        raise ValueError(f"expected 0, 1 or 2, got {label!r}")
    return label


def _tags(answer_info: dict[str, list[str]]) -> list[tuple[str, str]]:
    """(surface string, group tag) per option, e.g. ("British", "Europe")."""
    return [(str(answer_info[key][0]), str(answer_info[key][1])) for key in OPTION_KEYS]


def _unknown_index(answer_info: dict[str, list[str]]) -> int:
    unknown = [i for i, (_, tag) in enumerate(_tags(answer_info)) if tag == "unknown"]
    if len(unknown) != 1:
        raise ValueError(f"expected exactly one option tagged 'unknown', found {len(unknown)}")
    return unknown[0]


def _target_index(values: list[Any]) -> int | None:
    """The option naming the stereotyped group: its tag ("old") or its surface string ("British") is listed in
    stereotyped_groups. None when no option, or more than one, matches."""
    answer_info, extra = values
    groups = {str(group).lower() for group in extra["stereotyped_groups"]}
    matches = [i for i, (surface, tag) in enumerate(_tags(answer_info))
               if tag != "unknown" and (tag.lower() in groups or surface.lower() in groups)]
    return matches[0] if len(matches) == 1 else None


class BBQTask(FileTask):
    """One BBQ category file (`Age.jsonl`) or a directory of them; `context_condition` keeps only "ambig" (gold is
    always the unknown option) or "disambig" items."""

    name = "bbq"
    description = "BBQ social-bias multiple choice (a)/(b)/(c); reward choice; metadata for bias scores"
    default_reward = "choice"
    default_path = "bbq"
    check_kind = "bias"
    measures = "bias"
    field_map: ClassVar[FieldMap] = {
        "context": "context", "question": "question", "options": list(OPTION_KEYS), "gold": "label",
        "metadata.context_condition": "context_condition", "metadata.category": "category",
        "metadata.question_polarity": "question_polarity", "metadata.answer_info": "answer_info",
        "metadata.stereotyped_groups": "additional_metadata", "metadata.unknown_index": "answer_info",
        "metadata.target_index": ["answer_info", "additional_metadata"],
    }
    convert: ClassVar[Converters] = {
        "gold": _label,
        "metadata.stereotyped_groups": lambda extra: list(extra["stereotyped_groups"]),
        "metadata.unknown_index": _unknown_index,
        "metadata.target_index": _target_index,
    }

    def __init__(self, path: str | None = None, context_condition: str | None = None, **options: Any) -> None:
        if context_condition not in (None, *CONTEXT_CONDITIONS):
            raise SelfCorrectError(f"context_condition must be 'ambig', 'disambig' or None, got {context_condition!r}")
        self.context_condition = context_condition
        super().__init__(path=path, **options)

    def question(self, example: Example) -> str:
        fields = example.fields
        options = " ".join(f"({letter}) {option}" for letter, option in zip("abc", fields["options"], strict=True))
        return f"{fields['context']}\n{fields['question']}\n\n{options}."

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "context_condition": self.context_condition}

    def _load_examples(self) -> list[Example]:
        """Ids are `bbq-<category file>-<index>`, so an item keeps its id whether read alone or from a directory."""
        if self.path is None:
            examples = self._examples_from(self._records(), self.source, self.name)
        else:
            examples = [example for file in self._files(self.path)
                        for example in self._examples_from(read_records(file), str(file), f"{self.name}-{file.stem}")]
        if self.context_condition is None:
            return examples
        return [e for e in examples if e.metadata["context_condition"] == self.context_condition]

    @staticmethod
    def _files(path: Path) -> list[Path]:
        if not path.is_dir():
            return [path]
        files = sorted(path.glob("*.jsonl"))
        if not files:
            raise SelfCorrectError(f"{path}: no .jsonl files in this directory")
        return files

    @classmethod
    def mistake_kit(cls, pool: Sequence[Example]) -> MistakeKit:
        return option_kit()
