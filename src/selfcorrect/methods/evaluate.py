"""`selfcorrect eval`: run an inference-time method over a task, chunk by chunk, and write its run folder.

Methods (`method:`):
- `intrinsic` (the default): answer, then `rounds` review rounds; see methods/intrinsic.py;
- `cac` and `self-refine-style`: answer, then (check, answer again) x R; see methods/cac.py.

Examples are processed in fixed chunks; each chunk's trajectories (and its hidden states, when asked for) are
written when all its rounds are done, so `--resume` redoes at most one chunk. A partly written chunk is regenerated
whole (only its missing ids are appended), so every batch has the same composition as in an uninterrupted run and
the results are identical.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from selfcorrect.backends import build_backend
from selfcorrect.backends.base import Backend
from selfcorrect.errors import SelfCorrectError
from selfcorrect.methods.cac import check_summary, default_prompts, run_checks, spec_for
from selfcorrect.methods.intrinsic import run_intrinsic
from selfcorrect.methods.session import CHECK_METHODS, EvalConfig, Session
from selfcorrect.methods.stopping import finish
from selfcorrect.progress import Progress
from selfcorrect.prompts import get_prompt, load_prompts
from selfcorrect.runs import RunFolder, removes_fresh_output_on_error
from selfcorrect.tasks import Task, get_task
from selfcorrect.trajectory import Trajectory

if TYPE_CHECKING:
    from selfcorrect.analysis.round_uncertainty import Grouping

METHODS: dict[str, Callable[[Session, list], list[Trajectory]]] = {
    "intrinsic": run_intrinsic, "cac": run_checks, "self-refine-style": run_checks}


def resolve(config: EvalConfig) -> EvalConfig:
    """Fill in the method's default prompts, so the run folder records every prompt name it used."""
    if config.method not in CHECK_METHODS:
        if config.check_prompt or config.reask_prompt:
            raise SelfCorrectError(f"check_prompt/reask_prompt apply to {' and '.join(CHECK_METHODS)}, "
                                   f"not to method {config.method!r}")
    else:
        check, reask = default_prompts(config.method, config.task)
        config = config.model_copy(update={"check_prompt": config.check_prompt or check,
                                           "reask_prompt": config.reask_prompt or reask})
    if config.critic_noise is not None and config.method != "cac":
        raise SelfCorrectError("critic_noise is a control of method 'cac' only")
    if config.nli_model and not config.samples:
        raise SelfCorrectError("nli_model groups the extra samples of each answer: set --samples to 1 or more")
    prompts = load_prompts(config.prompts_file)
    for name in used_prompts(config):
        get_prompt(prompts, name)
    return config


def used_prompts(config: EvalConfig) -> list[str]:
    names = [config.question_prompt]
    names += [config.review_prompt] if config.method == "intrinsic" else [config.check_prompt, config.reask_prompt]
    if config.critic_noise is not None:
        spec = spec_for(config.task)
        names += [spec.bad_verdict, spec.good_verdict]
    return [n for n in names if n is not None]


def plan_option_scoring(config: EvalConfig, backend: Backend, examples: list) -> tuple[bool, str]:
    """(score options?, what the summary says about it). Refuses, in one line, an explicit request it cannot do."""
    from selfcorrect.methods.option_scoring import cannot_score, option_strings

    if config.option_confidence is False:
        return False, "off (option_confidence: false)"
    if not any(option_strings(ex) for ex in examples):
        if config.option_confidence:
            raise SelfCorrectError(f"option_confidence needs a multiple-choice task; {config.task!r} has no options")
        return False, "not a multiple-choice task"
    reason = cannot_score(backend)
    if reason is not None:
        if config.option_confidence:
            raise SelfCorrectError(reason)
        return False, f"unavailable: {reason}"
    return True, "teacher-forced option scoring through the hf backend"


def check_hidden(config: EvalConfig, backend: Backend) -> None:
    if config.hidden_layer is not None and not backend.supports_hidden_states:
        raise SelfCorrectError(f"backend {backend.name!r} gives no hidden states; --hidden-layer needs the hf backend")


@removes_fresh_output_on_error
def run_eval(config: EvalConfig, out: str | Path, resume: bool = False, quiet: bool = False,
             backend: Backend | None = None) -> dict[str, Any]:
    """Run (or resume) an eval into `out`; a `backend` given here is used as it is (`config.cache` applies to the
    one built here)."""
    task = get_task(config.task, **config.task_options)
    examples = task.examples(config.split, config.limit)
    config = resolve(config)
    run = RunFolder.open(out, config.model_dump(), resume=resume)
    owned = backend is None  # a backend built here is closed here (a vLLM engine holds the GPU until then)
    try:
        backend = backend or build_backend(config.backend, config.model, config.backend_options, cache=config.cache)
        check_hidden(config, backend)
        option_scoring, option_note = plan_option_scoring(config, backend, examples)
        grouping = answer_grouping(config)  # loads the NLI model now: a bad one fails before any generation
    except BaseException:  # the decorator removes a fresh run folder; the engine is ours to free
        if owned and backend is not None:
            backend.close()
        raise
    try:
        return _answer(config, task, examples, run, backend, (option_scoring, option_note), grouping, quiet)
    finally:
        if owned:
            backend.close()


def _answer(config: EvalConfig, task: Task, examples: list, run: RunFolder, backend: Backend,
            option_plan: tuple[bool, str], grouping: Grouping | None, quiet: bool) -> dict[str, Any]:
    """Answer every example not yet done, chunk by chunk, then write and return the summary."""
    option_scoring, option_note = option_plan
    done = run.done_ids()
    chunks = [examples[i:i + config.chunk_size] for i in range(0, len(examples), config.chunk_size)]
    todo = [(index, chunk) for index, chunk in enumerate(chunks) if any(ex.id not in done for ex in chunk)]
    started = time.perf_counter()
    calls = scoring_batches = 0
    with Progress(quiet=quiet) as progress:
        _add_bars(progress, config, sum(len(c) for _, c in todo))
        for index, chunk in todo:
            session = Session(backend, task, config, progress, score_options=option_scoring,
                              hidden=_hidden_store(config))
            trajectories = METHODS[config.method](session, chunk)
            finish(trajectories, config.rounds + 1)
            if session.hidden is not None:
                session.hidden.save(run.path, index)
            run.append(t for t in trajectories if t.id not in done)
            calls += session.calls
            scoring_batches += session.scoring_batches
    timings = {"generation_s": round(time.perf_counter() - started, 3), "backend_calls": calls,
               "scoring_batches": scoring_batches}
    trajectories = run.read_samples()
    summary = build_summary(config, task, backend, trajectories, option_note, timings, grouping)
    if hasattr(backend, "stats"):
        summary["cache"] = backend.stats()
    turns = [turn for traj in trajectories for turn in traj.model_turns()]
    if turns and all(turn.logprobs is None for turn in turns):
        summary["logprobs"] = f"unavailable: backend {backend.name!r} returned no token logprobs"
    run.write_summary(summary)
    return summary


def _add_bars(progress: Progress, config: EvalConfig, total: int) -> None:
    for round_index in range(1, config.rounds + 2):
        if round_index > 1 and config.method in CHECK_METHODS and config.critic_noise is None:
            progress.add(f"round {round_index} check", total)
        progress.add(f"round {round_index}", total)


def _hidden_store(config: EvalConfig) -> Any:
    if config.hidden_layer is None:
        return None
    from selfcorrect.analysis.probes import HiddenStore

    return HiddenStore(config.hidden_layer)


def answer_grouping(config: EvalConfig) -> Grouping | None:
    """Semantic grouping of samples when an NLI model is configured."""
    if not config.nli_model:
        return None
    from selfcorrect.analysis.nli import NLIJudge
    from selfcorrect.analysis.round_uncertainty import nli_grouping

    return nli_grouping(NLIJudge(config.nli_model).entails)


def build_summary(config: EvalConfig, task: Task, backend: Backend, trajectories: list[Trajectory],
                  option_note: str, timings: dict[str, Any], grouping: Grouping | None = None) -> dict[str, Any]:
    """summary.json: metrics by round with intervals, stopping, convergence, uncertainty, task-specific measures."""
    from selfcorrect.analysis.applications import application_metrics
    from selfcorrect.analysis.metrics import summarize
    from selfcorrect.analysis.round_uncertainty import uncertainty_by_round
    from selfcorrect.methods.stopping import convergence_round, stop_summary

    prompts = load_prompts(config.prompts_file)
    summary: dict[str, Any] = {
        "command": "eval", "method": config.method, "task": task.describe(), "model": backend.model_id,
        "backend": {**backend.describe(), **backend.capabilities()},
        "seed": config.seed, "prompts": {name: prompts[name].template for name in used_prompts(config)},
        "metrics": summarize(trajectories, seed=config.seed),
        "stopping": stop_summary(trajectories, config.stop_rule()),
        "convergence": convergence_round(trajectories, seed=config.seed),
        "uncertainty": {"by_round": uncertainty_by_round(trajectories, grouping),
                        "answer_grouping": f"nli:{config.nli_model}" if config.nli_model else "normalised text",
                        "option_confidence": option_note, "samples": config.samples},
        "application": application_metrics(task.name, trajectories, seed=config.seed),
        "timings": timings}
    if config.method == "cac":
        summary["checks"] = check_summary(trajectories, config)
    summary.update(task.extras(trajectories))
    return summary
