"""Tasks: where examples come from, how the first prompt reads, and how an answer is scored.

A task is registered under a short name (`selfcorrect tasks` lists them). Real-data tasks take a local file or a
`datasets` hub id; sandbox tasks are generated from a seed. A method never looks inside a task beyond this class.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, ClassVar

from selfcorrect.registry import construct, resolve
from selfcorrect.trajectory import Example, Verdict

SPLITS = ("train", "validation", "test")


class Task(ABC):
    """Subclasses set `name` and `description` and implement the three methods below."""

    name: ClassVar[str]
    description: ClassVar[str]
    #: Name of the round-1 instruction template (see prompts.py); rounds >= 2 use the method's own templates.
    question_template: ClassVar[str] = "question"
    #: Sampling defaults a method starts from when its config says nothing.
    max_new_tokens: ClassVar[int] = 256

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
        """Where the example was read from ("data.jsonl, line 12"), so an error about it can name the record;
        None for generated examples."""
        return None


_REGISTRY: dict[str, str] = {
    # name -> "module:Class", imported only when asked for, so `selfcorrect --help` stays instant.
    "sandbox-chain": "selfcorrect.tasks.sandbox_chain:SandboxChainTask",
    "nq-open": "selfcorrect.tasks.qa:NQOpenTask",
    "gsm8k": "selfcorrect.tasks.gsm8k:GSM8KTask",
    "bbq": "selfcorrect.tasks.bbq:BBQTask",
    "advbench": "selfcorrect.tasks.advbench:AdvBenchTask",
    "jsonl": "selfcorrect.tasks.generic:GenericTask",
}


def task_names() -> list[str]:
    return sorted(_REGISTRY)


def task_class(name: str) -> type[Task]:
    return resolve(_REGISTRY, name, "task")


def get_task(name: str, **options: Any) -> Task:
    """Build a task by name. `options` are the task's constructor arguments (e.g. `path=`, `field_map=`)."""
    return construct(task_class(name), options, f"task {name!r}")
