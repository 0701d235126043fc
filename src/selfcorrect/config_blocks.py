"""Config blocks: the task, model, prompt, sampling and seed settings that several commands share, declared once.

`EvalConfig`, `STaSCConfig`, `InSeCConfig` and `SelectConfig` compose these blocks by inheritance (as TRL's
`SFTConfig` extends `TrainingArguments`), so a shared setting has one name, one type, one default and one doc. A
config that needs another default re-declares that one field and says why (STaSC samples at temperature 1.0 where
eval decodes greedily). Keys stay flat: a block adds fields, not a nesting level, so every YAML in configs/ and every
saved config.yaml loads as before.

A config takes the blocks it really shares: select asks a corpus, not a task (no `TaskBlock`, only `PromptsBlock`),
and InSeC sets a temperature per use (`sample_temperature`, `eval_temperature`) and reads `max_new_tokens: None` as
room for a rewrite, so it takes no `SamplingBlock`.

pydantic lays out inherited fields from the last base class to the first, then the class's own fields, so a config
lists its blocks last-to-first: its config.yaml then reads task, model, sampling, seed, then the method's settings.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from selfcorrect.backends.base import SamplingParams, Temperature
from selfcorrect.config import StrictModel

if TYPE_CHECKING:
    from selfcorrect.tasks import Task


class PromptsBlock(StrictModel):
    """Where named prompts come from."""

    #: A YAML file of named prompts added to the built-in library (prompt_library/); None = the library alone.
    prompts_file: str | None = None


class TaskBlock(PromptsBlock):
    """Which task's examples are asked, and through which prompt."""

    #: A registered task name (`selfcorrect tasks` lists them).
    task: str = "sandbox-chain"
    #: Keyword arguments of the task (a data path, split sizes, ...).
    task_options: dict[str, Any] = {}
    #: The named prompt that asks each question (round 1).
    question_prompt: str = "question"


class ModelBlock(StrictModel):
    """Which model answers, and through which backend."""

    #: A registered backend name: hf, vllm, openai or scripted.
    backend: str = "hf"
    #: A built-in model name (`selfcorrect models`), a local folder or a hub id; None = the backend's own (a server's
    #: only model, a script).
    model: str | None = "sandbox"
    #: Keyword arguments of the backend (base_url, dtype, batch sizes, ...).
    backend_options: dict[str, Any] = {}


class SamplingBlock(StrictModel):
    """How each answer is sampled."""

    #: 0 = greedy.
    temperature: Temperature = 0.0
    top_p: float = 1.0
    #: None = the task's own answer length.
    max_new_tokens: int | None = None

    def sampling(self, task: Task, n: int = 1) -> SamplingParams:
        """The sampling of `n` answers per request to `task` (the per-request seed is set by `rounds.generate`)."""
        return SamplingParams(temperature=self.temperature, top_p=self.top_p, n=n,
                              max_new_tokens=self.max_new_tokens or task.max_new_tokens)


class SeedBlock(StrictModel):
    """The run's one seed."""

    #: Each request's seed derives from it and the request's id (`backends.base.request_seed`), never from its place
    #: in a batch; a training method derives its steps' seeds from it too.
    seed: int = 0

def block_values(config: StrictModel, *blocks: type[StrictModel]) -> dict[str, Any]:
    """`config`'s values of the fields of `blocks`: what a method hands on to the config of a step it runs (STaSC's
    evaluation runs `eval` on the same task, prompts, backend and seed)."""
    return {name: getattr(config, name) for block in blocks for name in block.model_fields}


__all__ = ["ModelBlock", "PromptsBlock", "SamplingBlock", "SeedBlock", "TaskBlock", "block_values"]
