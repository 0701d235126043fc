"""GSM8K: grade-school maths word problems; gold is the number after "####" in the worked solution."""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

from selfcorrect.rewards import parse_number
from selfcorrect.tasks.corruptions import MistakeKit, answer_swap_kit, number_slip
from selfcorrect.tasks.generic import FileTask
from selfcorrect.tasks.loaders import Converters, FieldMap
from selfcorrect.trajectory import Example


def final_answer(solution: str) -> str:
    """"...\\n#### 1,450,000" -> "1450000": the gold as a plain number string, as `final_number` compares it."""
    if not isinstance(solution, str) or "####" not in solution:
        raise ValueError("the solution has no '#### <number>' line")
    number = solution.rsplit("####", 1)[1].strip()
    if parse_number(number) is None:
        raise ValueError(f"the text after '####' is not a number: {number!r}")
    return number.replace(",", "").replace("$", "")


class GSM8KTask(FileTask):
    """`{"question", "answer"}` per line (openai/grade-school-math, or hub `openai/gsm8k` with hub_config="main").

    The worked solution stays in metadata["solution"], so a method can use it as a reference correction.
    """

    name = "gsm8k"
    description = "GSM8K maths word problems; gold = the number after ####; reward final_number"
    default_reward = "final_number"
    default_path = "gsm8k/test.jsonl"
    max_new_tokens: ClassVar[int] = 512
    field_map: ClassVar[FieldMap] = {"question": "question", "gold": "answer", "metadata.solution": "answer"}
    convert: ClassVar[Converters] = {"gold": final_answer}
    measures = "accuracy"

    def question(self, example: Example) -> str:
        return (f"{example.fields['question']}\n\nReason step by step, then give the final answer on its own line "
                f"as \"#### <number>\".")

    @classmethod
    def mistake_kit(cls, pool: Sequence[Example]) -> MistakeKit:
        return answer_swap_kit(pool, lambda example: str(example.gold), {"number_slip": number_slip})
