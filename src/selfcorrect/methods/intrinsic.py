"""Intrinsic multi-round self-correction: answer, then "review your previous answer" for N more rounds.

The whole conversation is carried into every round (the reference code of arXiv 2406.02378 accumulated history
but never fed it back). Examples are processed in fixed chunks; each chunk's trajectories are appended to
`samples.jsonl` when all its rounds are done, so `--resume` redoes at most one chunk. A partly written chunk is
regenerated whole (only its missing ids are appended), so every batch has the same composition as in an
uninterrupted run and the results are identical.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from selfcorrect.backends import load_backend
from selfcorrect.backends.base import Backend, SamplingParams
from selfcorrect.config import StrictModel
from selfcorrect.progress import Progress
from selfcorrect.prompts import get_prompt, load_prompts
from selfcorrect.rounds import add_instruction, generate, start
from selfcorrect.runs import RunFolder
from selfcorrect.tasks import Task, get_task


class EvalConfig(StrictModel):
    """`selfcorrect eval`: which task, which model, how many review rounds, how to sample."""

    task: str = "sandbox-chain"
    task_options: dict[str, Any] = {}
    backend: str = "hf"
    model: str | None = "sandbox"
    backend_options: dict[str, Any] = {}
    split: str = "test"
    limit: int | None = None
    rounds: int = 1
    temperature: float = 0.0
    top_p: float = 1.0
    max_new_tokens: int | None = None
    seed: int = 0
    chunk_size: int = 256
    question_prompt: str = "question"
    review_prompt: str = "review"
    prompts_file: str | None = None

    def sampling(self, task: Task) -> SamplingParams:
        return SamplingParams(temperature=self.temperature, top_p=self.top_p,
                              max_new_tokens=self.max_new_tokens or task.max_new_tokens)


def build_backend(name: str, model: str | None, options: dict[str, Any]) -> Backend:
    """Build the backend; `model: sandbox` means the cached sandbox model (pretrained on first use)."""
    if name == "hf":
        from selfcorrect.sandbox.cache import resolve_model

        return load_backend("hf", model=str(resolve_model(model)), **options)
    return load_backend(name, **({"model": model} if model else {}), **options)


def run_rounds(backend: Backend, task: Task, examples: list, config: EvalConfig, progress: Progress) -> list:
    """First answer plus `config.rounds` review rounds for a chunk of examples; one backend call per round."""
    prompts = load_prompts(config.prompts_file)
    params = config.sampling(task)
    trajectories = start(task, examples)
    add_instruction(trajectories, task, get_prompt(prompts, config.question_prompt), 1)
    trajectories = generate(backend, trajectories, task, kind="answer", round_index=1, params=params,
                            seed=config.seed)
    progress.advance("round 1", len(examples))
    review = get_prompt(prompts, config.review_prompt)
    for round_index in range(2, config.rounds + 2):
        add_instruction(trajectories, task, review, round_index)
        trajectories = generate(backend, trajectories, task, kind="correction", round_index=round_index,
                                params=params, seed=config.seed)
        progress.advance(f"round {round_index}", len(examples))
    return trajectories


def run_eval(config: EvalConfig, out: str | Path, resume: bool = False, quiet: bool = False,
             backend: Backend | None = None) -> dict[str, Any]:
    from selfcorrect.analysis.metrics import summarize

    task = get_task(config.task, **config.task_options)
    examples = task.examples(config.split, config.limit)
    run = RunFolder.open(out, config.model_dump(), resume=resume)
    done = run.done_ids()
    backend = backend or build_backend(config.backend, config.model, config.backend_options)
    chunks = [examples[i:i + config.chunk_size] for i in range(0, len(examples), config.chunk_size)]
    todo = [chunk for chunk in chunks if any(ex.id not in done for ex in chunk)]
    started = time.perf_counter()
    calls = 0
    with Progress(quiet=quiet) as progress:
        for round_index in range(1, config.rounds + 2):
            progress.add(f"round {round_index}", sum(len(c) for c in todo))
        for chunk in todo:
            trajectories = run_rounds(backend, task, chunk, config, progress)
            calls += config.rounds + 1
            run.append(t for t in trajectories if t.id not in done)
    elapsed = time.perf_counter() - started
    trajectories = run.read_samples()
    summary = {"command": "eval", "task": task.describe(), "model": backend.model_id, "seed": config.seed,
               "metrics": summarize(trajectories, seed=config.seed),
               "timings": {"generation_s": round(elapsed, 3), "backend_calls": calls}}
    summary.update(task_extras(task, trajectories))
    run.write_summary(summary)
    return summary


def task_extras(task: Task, trajectories: list) -> dict[str, Any]:
    """Task-specific facts worth printing beside the metrics (the sandbox's lucky-hit rate)."""
    from selfcorrect.tasks.sandbox_chain import SandboxChainTask, lucky_hit_rate

    if not isinstance(task, SandboxChainTask):
        return {}
    first = [t.model_turns()[0].verdict for t in trajectories if t.model_turns()]
    return {"lucky_hit_rate_t1": lucky_hit_rate([v for v in first if v is not None])}
