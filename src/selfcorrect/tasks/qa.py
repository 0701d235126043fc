"""NQ-open: open-domain short-answer QA, STaSC's benchmark; gold is the list of acceptable answer aliases."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

from selfcorrect.tasks.corruptions import MistakeKit, answer_swap_kit, first_alias
from selfcorrect.tasks.generic import FileTask
from selfcorrect.tasks.loaders import Converters, FieldMap
from selfcorrect.trajectory import Example


def _alias_list(answer: Any) -> list[str]:
    """NQ-open's `answer` is a list of aliases; a lone string (as in some copies) is one alias."""
    aliases = [answer] if isinstance(answer, str) else answer
    if not isinstance(aliases, list) or not aliases or not all(isinstance(a, str) for a in aliases):
        raise ValueError(f"expected a non-empty list of answer strings, got {answer!r}")
    return list(aliases)


class NQOpenTask(FileTask):
    """`{"question": ..., "answer": [aliases]}` per line (NQ-open.dev.jsonl, or hub `google-research-datasets/nq_open`
    with hub_split="validation"), scored by in-accuracy as in STaSC."""

    name = "nq-open"
    description = "NQ-open short-answer QA; gold = alias list; reward in_accuracy (STaSC)"
    default_reward = "in_accuracy"
    default_path = "nq_open/NQ-open.dev.jsonl"
    field_map: ClassVar[FieldMap] = {"question": "question", "gold": "answer"}
    convert: ClassVar[Converters] = {"gold": _alias_list}
    measures = "accuracy"

    def question(self, example: Example) -> str:
        return f"Question: {example.fields['question']}\nAnswer:"

    @classmethod
    def mistake_kit(cls, pool: Sequence[Example]) -> MistakeKit:
        return answer_swap_kit(pool, first_alias)
