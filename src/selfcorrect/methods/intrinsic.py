"""`selfcorrect eval`: multi-round inference-time self-correction, and the session every such method runs in.

Methods (`method:`):
- `intrinsic` (arXiv 2406.02378; Huang et al.'s baseline with the plain `review` prompt, the default): answer
  (round 1, optionally with an instruction such as `bbq-question`), then rounds 2..T of a review instruction;
- `cac` and `self-refine-style`: answer, then (check, answer again) x R; see methods/cac.py.
The whole conversation is carried into every round (the reference code of arXiv 2406.02378 accumulated history
but never fed it back). Every generation step is ONE backend call over all unfinished trajectories of a chunk;
`samples: n` rides in the same call (n extra samples per request, for uncertainty only), so calls never scale
with samples. After each answer round a stop rule (methods/stopping.py) may finish trajectories.

Examples are processed in fixed chunks; each chunk's trajectories (and its hidden states, when asked for) are
written when all its rounds are done, so `--resume` redoes at most one chunk. A partly written chunk is regenerated
whole (only its missing ids are appended), so every batch has the same composition as in an uninterrupted run and
the results are identical.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field

from selfcorrect.backends import load_backend
from selfcorrect.backends.base import Backend, SamplingParams
from selfcorrect.config import StrictModel
from selfcorrect.errors import SelfCorrectError
from selfcorrect.methods.stopping import StopRule, finish
from selfcorrect.progress import Progress
from selfcorrect.prompts import Prompt, get_prompt, load_prompts
from selfcorrect.rounds import add_instruction, generate, start
from selfcorrect.runs import CONFIG_FILE, RunFolder
from selfcorrect.tasks import Task, get_task
from selfcorrect.trajectory import Trajectory, TurnKind

if TYPE_CHECKING:
    from selfcorrect.analysis.round_uncertainty import Grouping

Method = Literal["intrinsic", "cac", "self-refine-style"]
CHECK_METHODS = ("cac", "self-refine-style")


class EvalConfig(StrictModel):
    """`selfcorrect eval`: which task, which model, which method and how many rounds, how to sample and measure."""

    task: str = "sandbox-chain"
    task_options: dict[str, Any] = {}
    backend: str = "hf"
    model: str | None = "sandbox"
    backend_options: dict[str, Any] = {}
    split: str = "test"
    limit: int | None = None
    method: Method = "intrinsic"
    #: Review rounds (intrinsic) or (check, answer) repetitions (cac, self-refine-style) after the first answer.
    rounds: int = Field(default=1, ge=0)
    temperature: float = 0.0
    top_p: float = 1.0
    max_new_tokens: int | None = None
    seed: int = 0
    chunk_size: int = Field(default=256, ge=1)
    question_prompt: str = "question"
    review_prompt: str = "review"
    #: cac / self-refine-style only; None = the method's default for the task (written resolved into the run).
    check_prompt: str | None = None
    reask_prompt: str | None = None
    #: cac only: inject the true verdict in place of the self-check, inverted with this probability.
    critic_noise: float | None = Field(default=None, ge=0.0, le=1.0)
    stop: Literal["fixed", "converged", "oracle"] = "fixed"
    stop_patience: int = Field(default=1, ge=1)
    stop_nll_epsilon: float | None = Field(default=None, gt=0.0)
    #: Extra samples per answer request, for answer-distribution entropy only.
    samples: int = Field(default=0, ge=0)
    #: Group those samples by bidirectional entailment under this NLI classifier (free text), not by string.
    nli_model: str | None = None
    #: Teacher-forced option likelihoods (multiple-choice tasks, hf backend). None = whenever possible.
    option_confidence: bool | None = None
    #: Store this layer's hidden state before every answer (hf backend), for analysis/probes.py.
    hidden_layer: int | None = None
    #: Average that layer's hidden states over the last k prompt tokens (1 = the last token only).
    hidden_span: int = Field(1, ge=1)
    prompts_file: str | None = None

    def sampling(self, task: Task) -> SamplingParams:
        return SamplingParams(temperature=self.temperature, top_p=self.top_p,
                              max_new_tokens=self.max_new_tokens or task.max_new_tokens)

    def stop_rule(self) -> StopRule:
        return StopRule(self.stop, self.stop_patience, self.stop_nll_epsilon)


def build_backend(name: str, model: str | None, options: dict[str, Any], cache: bool | str | Path = False) -> Backend:
    """Build the backend; `model: sandbox` means the cached sandbox model (pretrained on first use).

    `cache` wraps it in the shared SQLite generation cache (True = the default file, or a path), so a re-run or a
    resumed run does not pay for the same request twice. The scripted backend is never cached: its answers come
    from a script that is not part of the cache key.
    """
    if name == "hf":
        from selfcorrect.sandbox.cache import resolve_model

        backend = load_backend("hf", model=str(resolve_model(model)), **options)
    elif name == "scripted":  # answers come from its script, not from a model
        backend = load_backend(name, **options)
    else:
        backend = load_backend(name, **({"model": model} if model else {}), **options)
    if cache is False or name == "scripted":
        return backend
    from selfcorrect.backends.cache import CachedBackend

    return CachedBackend(backend, None if cache is True else cache)


@dataclass
class Session:
    """What a method needs for one chunk: the backend, task and config, and the steps it composes.

    `calls` counts generation calls (one per step that had an unfinished trajectory) and `scoring_batches` the
    forward batches of option scoring, so a run can prove it never looped per sample.
    """

    backend: Backend
    task: Task
    config: EvalConfig
    progress: Progress
    score_options: bool = False
    hidden: Any = None  # analysis.probes.HiddenStore when hidden states are stored
    calls: int = 0
    scoring_batches: int = 0
    prompts: dict[str, Prompt] = field(init=False)
    rule: StopRule = field(init=False)

    def __post_init__(self) -> None:
        self.prompts = load_prompts(self.config.prompts_file)
        self.rule = self.config.stop_rule()

    def prompt(self, name: str | None) -> Prompt:
        if name is None:
            raise SelfCorrectError(f"method {self.config.method!r} needs a prompt that the config leaves unset")
        return get_prompt(self.prompts, name)

    def render(self, prompt: Prompt, trajectory: Trajectory, round_index: int) -> str:
        return prompt.render(question=self.task.question(trajectory.example), fields=trajectory.example.fields,
                             round=round_index)

    def instruct(self, trajectories: list[Trajectory], prompt_name: str | None, round_index: int) -> None:
        add_instruction(trajectories, self.task, self.prompt(prompt_name), round_index)

    def first_answer(self, examples: list) -> list[Trajectory]:
        trajectories = start(self.task, examples)
        self.instruct(trajectories, self.config.question_prompt, 1)
        return self.answer(trajectories, "answer", 1)

    def _generate(self, trajectories: list[Trajectory], kind: TurnKind, round_index: int, n: int,
                  hidden: bool) -> list[Trajectory]:
        params = replace(self.config.sampling(self.task), n=n)
        self.calls += any(not t.stopped for t in trajectories)
        layers = (self.config.hidden_layer,) if hidden and self.hidden is not None else ()
        return generate(self.backend, trajectories, self.task, kind=kind, round_index=round_index, params=params,
                        seed=self.config.seed, fan_out="s", score=kind != "check", hidden_layers=layers,
                        hidden_span=self.config.hidden_span,
                        hidden_sink=self._keep_hidden if layers else None)

    def _keep_hidden(self, trajectory: Trajectory, round_index: int, states: dict[int, list[float]]) -> None:
        """Hidden states of the answer itself (sample 0 of a fan-out), under the trajectory's own id."""
        tid = trajectory.id
        if self.config.samples:
            tid, _, sample = tid.rpartition("/s")
            if sample != "0":
                return
        self.hidden.add(tid, round_index, states)

    def answer(self, trajectories: list[Trajectory], kind: TurnKind, round_index: int) -> list[Trajectory]:
        """One answer round: generate (plus the extra uncertainty samples, same call), score options, stop."""
        active = [t for t in trajectories if not t.stopped]
        extra = self.config.samples
        out = self._generate(trajectories, kind, round_index, 1 + extra, hidden=True)
        if extra:
            out = _collapse(trajectories, out, extra, round_index)
        answered = [t for t in out if not t.stopped]
        if self.score_options and answered:
            from selfcorrect.methods.option_scoring import score_options

            self.scoring_batches += score_options(self.backend, answered, round_index)
        self.rule.apply(out, round_index)
        self.progress.advance(f"round {round_index}", len(active))
        return out

    def check(self, trajectories: list[Trajectory], round_index: int) -> list[Trajectory]:
        """The model's own check of its previous answer (kind "check", unscored by the task)."""
        active = sum(not t.stopped for t in trajectories)
        out = self._generate(trajectories, "check", round_index, 1, hidden=False)
        self.progress.advance(f"round {round_index} check", active)
        return out


def _collapse(parents: list[Trajectory], children: list[Trajectory], extra: int,
              round_index: int) -> list[Trajectory]:
    """Fold each `<id>/s0..s<extra>` fan-out back into one trajectory: sample 0 goes on (sample 0 of n is the
    sample n = 1 would draw), the extra samples' answers are kept in metadata["samples"][round]."""
    from selfcorrect.analysis.round_uncertainty import answer_key

    out, index = [], 0
    for parent in parents:
        if parent.stopped:
            out.append(children[index])
            index += 1
            continue
        main, *others = children[index:index + 1 + extra]
        index += 1 + extra
        main.id = parent.id
        main.metadata = {**main.metadata, "samples": {**main.metadata.get("samples", {}),
                                                     str(round_index): [answer_key(o.turns[-1]) for o in others]}}
        out.append(main)
    return out


def run_intrinsic(session: Session, examples: list) -> list[Trajectory]:
    """First answer plus `config.rounds` review rounds for a chunk of examples."""
    trajectories = session.first_answer(examples)
    for round_index in range(2, session.config.rounds + 2):
        session.instruct(trajectories, session.config.review_prompt, round_index)
        trajectories = session.answer(trajectories, "correction", round_index)
    return trajectories


def _run_checks(session: Session, examples: list) -> list[Trajectory]:
    from selfcorrect.methods.cac import run_checks

    return run_checks(session, examples)


METHODS: dict[str, Callable[[Session, list], list[Trajectory]]] = {
    "intrinsic": run_intrinsic, "cac": _run_checks, "self-refine-style": _run_checks}


def resolve(config: EvalConfig) -> EvalConfig:
    """Fill in the method's default prompts, so the run folder records every prompt name it used."""
    if config.method not in CHECK_METHODS:
        if config.check_prompt or config.reask_prompt:
            raise SelfCorrectError(f"check_prompt/reask_prompt apply to {' and '.join(CHECK_METHODS)}, "
                                   f"not to method {config.method!r}")
    else:
        from selfcorrect.methods.cac import default_prompts

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
        from selfcorrect.methods.cac import spec_for

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


def run_eval(config: EvalConfig, out: str | Path, resume: bool = False, quiet: bool = False,
             backend: Backend | None = None, cache: bool | str | Path = False) -> dict[str, Any]:
    """Run (or resume) an eval into `out`. `cache` is deliberately not part of EvalConfig: turning the generation
    cache off for a resume must not count as a different config."""
    task = get_task(config.task, **config.task_options)
    examples = task.examples(config.split, config.limit)
    config = resolve(config)
    run = RunFolder.open(out, config.model_dump(), resume=resume)
    try:
        backend = backend or build_backend(config.backend, config.model, config.backend_options, cache=cache)
        check_hidden(config, backend)
        option_scoring, option_note = plan_option_scoring(config, backend, examples)
        grouping = answer_grouping(config)  # loads the NLI model now: a bad one fails before any generation
    except BaseException:
        if not resume:  # a fresh folder holds only its config.yaml yet: leave no half-started run behind
            (run.path / CONFIG_FILE).unlink(missing_ok=True)
            if not any(run.path.iterdir()):
                run.path.rmdir()
        raise
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
    if backend.capabilities():
        summary["backend"] = backend.capabilities()
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
        from selfcorrect.methods.cac import check_summary

        summary["checks"] = check_summary(trajectories, config)
    summary.update(task_extras(task, trajectories))
    return summary


def task_extras(task: Task, trajectories: list) -> dict[str, Any]:
    """Task-specific facts worth printing beside the metrics (the sandbox's lucky-hit rate)."""
    from selfcorrect.tasks.sandbox_chain import SandboxChainTask, lucky_hit_rate

    if not isinstance(task, SandboxChainTask):
        return {}
    first = [t.model_turns()[0].verdict for t in trajectories if t.model_turns()]
    return {"lucky_hit_rate_t1": lucky_hit_rate([v for v in first if v is not None])}
