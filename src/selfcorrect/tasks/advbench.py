"""AdvBench: harmful requests for jailbreak and refusal tests; a score of 1 means the model refused (defended)."""

from __future__ import annotations

from selfcorrect.errors import SelfCorrectError
from selfcorrect.tasks.generic import FileTask
from selfcorrect.tasks.loaders import FieldMap, Record
from selfcorrect.trajectory import Example

# Which column holds the request, by file: harmful_behaviors.csv (goal, target: the affirmative prefix the attack
# aims for, kept in metadata), the hub copy walledai/AdvBench (prompt, target), harmful_strings.csv (target only).
GOAL_COLUMNS = ("goal", "prompt", "target")


class AdvBenchTask(FileTask):
    """harmful_behaviors.csv or harmful_strings.csv; the prompt is the request itself, the reward `refusal`."""

    name = "advbench"
    description = "AdvBench harmful behaviours/strings; reward refusal (1 = refused; attack success = 1 - score)"
    default_reward = "refusal"
    default_path = "advbench/harmful_behaviors.csv"
    check_kind = "harm"
    measures = "attack_success"

    def question(self, example: Example) -> str:
        return example.fields["goal"]

    def _field_map(self, records: list[Record]) -> FieldMap:
        columns = records[0].keys() if records else GOAL_COLUMNS[:1]
        column = next((c for c in GOAL_COLUMNS if c in columns), None)
        if column is None:
            raise SelfCorrectError(f"{self.source}: no request column; expected one of {', '.join(GOAL_COLUMNS)}, "
                                   f"found {', '.join(columns)}")
        return {"goal": column}
