"""The eval session: what every inference-time method composes its rounds from, and the config it runs under.

A method (methods/intrinsic.py, methods/cac.py) is a short function of a `Session` and a chunk of examples; the
session owns the steps. Every generation step is ONE backend call over all unfinished trajectories of a chunk;
`samples: n` rides in the same call (n extra samples per request, for uncertainty only), so calls never scale with
samples. After each answer round a stop rule (methods/stopping.py) may finish trajectories.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import Field

from selfcorrect.backends.base import Backend
from selfcorrect.config_blocks import ModelBlock, SamplingBlock, SeedBlock, TaskBlock
from selfcorrect.errors import SelfCorrectError
from selfcorrect.methods.stopping import StopRule
from selfcorrect.progress import Progress
from selfcorrect.prompts import Prompt, get_prompt, load_prompts
from selfcorrect.rounds import add_instruction, generate, start
from selfcorrect.tasks import Task
from selfcorrect.trajectory import Trajectory, TurnKind

Method = Literal["intrinsic", "cac", "self-refine-style"]
CHECK_METHODS = ("cac", "self-refine-style")


class EvalConfig(SeedBlock, SamplingBlock, ModelBlock, TaskBlock):
    """`selfcorrect eval`: which task, which model, which method and how many rounds, how to sample and measure.

    Task, model, sampling and seed settings come from the shared blocks (config_blocks.py); eval keeps their defaults.
    """

    #: Answer requests already made from the shared generation cache (backends/cache.py); saved with the run, so
    #: `--resume` continues with or without it as the run began.
    cache: bool = True
    split: str = "test"
    limit: int | None = None
    method: Method = "intrinsic"
    #: Review rounds (intrinsic) or (check, answer) repetitions (cac, self-refine-style) after the first answer.
    rounds: int = Field(default=1, ge=0)
    chunk_size: int = Field(default=256, ge=1)
    review_prompt: str = "review"
    #: cac / self-refine-style only; None = the method's default for the task (written resolved into the run).
    check_prompt: str | None = None
    reask_prompt: str | None = None
    #: cac only: inject the true verdict in place of the self-check, inverted with this probability.
    critic_noise: float | None = Field(default=None, ge=0.0, le=1.0)
    stop: Literal["fixed", "converged", "oracle"] = "fixed"
    stop_patience: int = Field(default=1, ge=1)
    stop_nll_epsilon: float | None = Field(default=None, gt=0.0)
    #: Sampled answers drawn per answer request beside the answer that goes on, for answer-distribution entropy only.
    samples: int = Field(default=0, ge=0)
    #: Group those samples by bidirectional entailment under this NLI classifier (free text), not by string.
    nli_model: str | None = None
    #: Teacher-forced option likelihoods (multiple-choice tasks, hf backend). None = whenever possible.
    option_confidence: bool | None = None
    #: Store this layer's hidden state before every answer (hf backend), for analysis/probes.py.
    hidden_layer: int | None = None
    #: Average that layer's hidden states over the last k prompt tokens (1 = the last token only).
    hidden_span: int = Field(1, ge=1)

    def stop_rule(self) -> StopRule:
        return StopRule(self.stop, self.stop_patience, self.stop_nll_epsilon)


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
        params = self.config.sampling(self.task, n)
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
