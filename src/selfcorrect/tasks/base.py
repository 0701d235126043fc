"""Tasks: where examples come from, how the first prompt reads, and how an answer is scored.

A task is registered under a short name (`selfcorrect tasks` lists them). Real-data tasks take a local file or a
`datasets` hub id; sandbox tasks are generated from a seed. A method never looks inside a task beyond this class.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, ClassVar

from selfcorrect.errors import SelfCorrectError, suggest
from selfcorrect.registry import construct, resolve
from selfcorrect.trajectory import Example, Trajectory, Verdict

if TYPE_CHECKING:
    from selfcorrect.tasks.corruptions import MistakeKit

SPLITS = ("train", "validation", "test")


class Task(ABC):
    """Subclasses set `name` and `description` and implement the three methods below."""

    name: ClassVar[str]
    description: ClassVar[str]
    #: Name of the round-1 instruction template (see prompts.py); rounds >= 2 use the method's own templates.
    question_template: ClassVar[str] = "question"
    #: Sampling defaults a method starts from when its config says nothing.
    max_new_tokens: ClassVar[int] = 256
    #: What a check of an answer judges (methods/cac.py): "correctness", or "bias" / "harm" for safety tasks.
    check_kind: ClassVar[str] = "correctness"
    #: The task's own measures beyond accuracy (analysis/applications.py), or None when it has none.
    measures: ClassVar[str | None] = None

    @abstractmethod
    def examples(self, split: str, limit: int | None = None) -> list[Example]:
        """The examples of a split, in a fixed order (the first `limit` of them when given)."""

    @abstractmethod
    def question(self, example: Example) -> str:
        """The user message that asks the question (round 1), before any method-specific instruction."""

    @abstractmethod
    def score(self, example: Example, text: str) -> Verdict:
        """Score a model output against the example's gold."""

    def describe(self) -> dict[str, Any]:
        """What the run folder records about the task."""
        return {"name": self.name}

    def locate(self, example: Example) -> str | None:
        """Where the example was read from ("data.jsonl, line 12, field 'question'": the record, and its field
        that feeds the most text into the prompt), so an error about it can name what to fix; None for generated
        examples."""
        return None

    @classmethod
    def mistake_kit(cls, pool: Sequence[Example]) -> MistakeKit | None:
        """How InSeC writes, corrupts and splits this task's answers (tasks/corruptions.py), or None when it cannot;
        `pool` is the examples that swap corruptions draw other answers from."""
        return None

    def pretraining_replay(self, count: int, seed: int) -> list[list[dict[str, str]]] | None:
        """`count` conversations from the distribution the model was pretrained on (STaSC's replay), or None for a
        task that cannot generate it (only sandbox tasks can: their pretraining data is generated)."""
        return None

    def extras(self, trajectories: Sequence[Trajectory]) -> dict[str, Any]:
        """Task-specific facts a run summary prints beside the metrics (the sandbox's lucky-hit rate)."""
        return {}


_REGISTRY: dict[str, str] = {
    # name -> "module:Class", imported only when asked for, so `selfcorrect --help` stays instant.
    "sandbox-chain": "selfcorrect.tasks.sandbox_chain:SandboxChainTask",
    "nq-open": "selfcorrect.tasks.qa:NQOpenTask",
    "gsm8k": "selfcorrect.tasks.gsm8k:GSM8KTask",
    "bbq": "selfcorrect.tasks.bbq:BBQTask",
    "advbench": "selfcorrect.tasks.advbench:AdvBenchTask",
    "arithmetic": "selfcorrect.tasks.arithmetic:ArithmeticTask",
    "capitals": "selfcorrect.tasks.capitals:CapitalsTask",
    "jsonl": "selfcorrect.tasks.generic:GenericTask",
}


def task_names() -> list[str]:
    return sorted(_REGISTRY)


def task_class(name: str) -> type[Task]:
    return resolve(_REGISTRY, name, "task")


def get_task(name: str, **options: Any) -> Task:
    """Build a task by name. `options` are the task's constructor arguments (e.g. `path=`, `field_map=`)."""
    return construct(task_class(name), options, f"task {name!r}")


def kit_names() -> list[str]:
    """The registered tasks that have an InSeC mistake kit."""
    return [name for name in task_names() if task_class(name).mistake_kit(()) is not None]


def get_kit(name: str, pool: Sequence[Example] = ()) -> MistakeKit:
    """Task `name`'s mistake kit (`Task.mistake_kit`); one line naming the tasks that have one if it has none."""
    kit = task_class(name).mistake_kit(pool)
    if kit is None:
        raise SelfCorrectError(f"task {name!r} has no InSeC corruptions{suggest(name, kit_names())}; "
                               f"tasks with them: {', '.join(kit_names())}")
    return kit
