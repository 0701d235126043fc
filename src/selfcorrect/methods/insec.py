"""InSeC, internalized self-correction (arXiv 2412.16653): train on sequences that hold a mistake, a correction
marker and the correction, so the model learns to notice an error in its own output and fix it inline.

The paper gives no format and no code; the choices made here are in `insec_data` (format, marker semantics, loss
segments). Negatives come from one of two places, which is the question this module exists to answer
(synthetic injected errors often fail to teach correction: Wu et al., arXiv 2512.02389):
- `on_policy`: the model's own wrong answers (one backend call, `samples_per_question` per question), cut after the
  first wrong step at step level;
- `synthetic`: the task's registered corruptions (`tasks/corruptions.py`) applied to the correct answer;
- `none`: plain SFT on the same clean examples with the same number of sequences and optimiser steps, the control.
Each iteration (sample -> build -> train -> evaluate) is a resumable step of the shared `StepStore`; with
`iterations > 1` it repeats from the newest model (iterated InSeC). Evaluation decodes with room for a rewrite and
scores what the output stands by after its last marker, reporting the marker's precision and recall beside accuracy.
"""

from __future__ import annotations

import json
from collections import Counter
from contextlib import closing
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import Field

from selfcorrect.analysis.metrics import FLIP_LABELS
from selfcorrect.backends.base import Backend, SamplingParams, Temperature, request_seed
from selfcorrect.config_blocks import ModelBlock, SeedBlock, TaskBlock
from selfcorrect.methods.insec_data import (
    Granularity,
    MistakeLoss,
    Negative,
    add_tokens,
    marker_metrics,
    marker_tokens,
    negative_from,
    reader,
)
from selfcorrect.methods.stasc import sandbox_finetune_defaults
from selfcorrect.methods.steps import StepStore, timed
from selfcorrect.prompts import get_prompt, load_prompts
from selfcorrect.rounds import add_instruction, generate, start
from selfcorrect.runs import RunFolder, removes_fresh_output_on_error
from selfcorrect.tasks import Task, get_kit, get_task
from selfcorrect.tasks.corruptions import MistakeKit
from selfcorrect.training.finetune import FINETUNE_FILE, FinetuneConfig
from selfcorrect.trajectory import Trajectory, Verdict

Negatives = Literal["on_policy", "synthetic", "none"]


class InSeCConfig(SeedBlock, ModelBlock, TaskBlock):
    """`selfcorrect insec`: where negatives come from, how they are written and trained, how the result is read.

    Task, model and seed settings come from the shared blocks (config_blocks.py); sampling is InSeC's own (a
    temperature per use, and room for a rewrite after a marker).
    """

    #: Fine-tuning needs weights, so a model is required.
    model: str = "sandbox"
    negatives: Negatives = "on_policy"
    granularity: Granularity = "step"
    #: Synthetic negatives: the task's corruptions to draw from, uniformly (None = all registered ones).
    corruptions: list[str] | None = None
    #: Share of each iteration's training sequences that hold a mistake; the rest are clean (question, answer) pairs.
    negative_share: float = Field(0.5, ge=0.0, le=1.0)
    marker: str = "<fix>"
    #: Follow the marker with a reason token (`<why-state>`, `<why-digit>`, ...), learnt like the correction.
    reasons: bool = False
    #: New token -> existing text whose mean token embedding it starts from (default: near the mean embedding).
    token_init: dict[str, str] = {}
    mistake_loss: MistakeLoss = "none"
    unlikelihood_weight: float = Field(1.0, gt=0.0)
    iterations: int = Field(1, ge=1)
    #: On-policy answers drawn per training question per iteration (temperature `sample_temperature`), from which
    #: the wrong ones become negatives.
    samples_per_question: int = Field(2, ge=1)
    sample_temperature: Temperature = 1.0
    #: Training sequences per iteration (None = one per training question); equal for every arm of a comparison.
    examples_per_iteration: int | None = Field(None, ge=1)
    #: Each iteration trains the previous iteration's model (True) or the base model again (False).
    evolving: bool = True
    train_split: str = "train"
    train_limit: int | None = None
    eval_split: str = "test"
    eval_limit: int | None = None
    #: The sandbox is measured sampled: greedy decoding removes its noisy writer's slips (tasks/sandbox_chain.py).
    eval_temperature: Temperature = 1.0
    #: None = twice the task's answer length, so one full rewrite fits after a marker.
    max_new_tokens: int | None = Field(None, ge=1)
    finetune: FinetuneConfig = Field(default_factory=sandbox_finetune_defaults)

    def sampling(self, task: Task, temperature: float, n: int = 1) -> SamplingParams:
        """`n` answers per request at `temperature`, with room for a rewrite after a marker."""
        return SamplingParams(temperature=temperature, n=n,
                              max_new_tokens=self.max_new_tokens or 2 * task.max_new_tokens)


def _prompted(task: Task, examples: list, config: InSeCConfig) -> list[Trajectory]:
    """One trajectory per example holding the round-1 user message: the training and evaluation prompt."""
    trajectories = start(task, examples)
    add_instruction(trajectories, task, get_prompt(load_prompts(config.prompts_file), config.question_prompt), 1)
    return trajectories


def answer(backend: Backend, task: Task, examples: list, config: InSeCConfig, params: SamplingParams,
           seed: int) -> list[Trajectory]:
    """First answers (n per example) in one backend call, unscored: outputs with markers are read, not scored."""
    return generate(backend, _prompted(task, examples, config), task, kind="answer", round_index=1, params=params,
                    seed=seed, fan_out="a", score=False)


def _attempt(trajectory: Trajectory, marker: str) -> str:
    """What an answer attempted before any correction of its own (a later iteration's model may already mark)."""
    return trajectory.last_answer.text.split(marker)[0]


def harvest(answers: list[Trajectory], task: Task, kit: MistakeKit,
            config: InSeCConfig) -> list[tuple[Trajectory, Negative]]:
    """On-policy negatives: the answers whose attempt the reward calls wrong, each cut at its first wrong step."""
    negatives = []
    for traj in answers:
        attempt = _attempt(traj, config.marker)
        if task.score(traj.example, attempt).correct:
            continue
        negative = negative_from(kit, traj.example, attempt, config.granularity, "on_policy")
        if negative is not None:
            negatives.append((traj, negative))
    return negatives


def corrupt(prompted: list[Trajectory], kit: MistakeKit, config: InSeCConfig, count: int,
            rng: np.random.Generator) -> list[tuple[Trajectory, Negative]]:
    """Synthetic negatives: a uniformly chosen corruption of a question's answer, cycling through the questions.

    A corruption that leaves nothing to mark at step level (e.g. a skipped last step) is simply drawn again.
    """
    from selfcorrect.errors import SelfCorrectError

    names = config.corruptions or sorted(kit.corruptions)
    unknown = sorted(set(names) - set(kit.corruptions))
    if unknown:
        raise SelfCorrectError(f"unknown corruption(s) {', '.join(unknown)} for task {config.task!r}; "
                               f"known: {', '.join(sorted(kit.corruptions))}")
    made: list[tuple[Trajectory, Negative]] = []
    order = rng.permutation(len(prompted))
    for attempt_index in range(10 * count):
        if len(made) == count:
            break
        traj = prompted[order[attempt_index % len(order)]]
        name = names[int(rng.integers(len(names)))]
        negative = negative_from(kit, traj.example, kit.corruptions[name](traj.example, rng), config.granularity,
                                 name)
        if negative is not None:
            made.append((traj, negative))
    return made


def _pick(items: list, count: int, rng: np.random.Generator) -> list:
    """`count` items, without replacement while there are enough (then cycling through shuffled copies)."""
    if not items or count <= 0:
        return []
    picks = np.concatenate([rng.permutation(len(items)) for _ in range(-(-count // len(items)))])[:count]
    return [items[i] for i in picks]


def build_training_set(prompted: list[Trajectory], answers: list[Trajectory] | None, task: Task, kit: MistakeKit,
                       config: InSeCConfig, seed: int) -> dict[str, Any]:
    """One iteration's sequences: clean answers and negatives at `negative_share`, always `examples_per_iteration`
    in all, so every arm of a comparison takes the same optimiser steps. When too few negatives exist the shortfall is
    filled with clean sequences and recorded."""
    rng = np.random.default_rng(seed)
    size = config.examples_per_iteration or len(prompted)
    wanted = round(size * config.negative_share) if config.negatives != "none" else 0
    if config.negatives == "on_policy":
        pool = harvest(answers or [], task, kit, config)
    elif config.negatives == "synthetic":
        pool = corrupt(prompted, kit, config, wanted, rng)
    else:
        pool = []
    chosen = _pick(pool, wanted, rng)
    clean = _pick(prompted, size - len(chosen), rng)
    conversations = [[t.messages()[0], {"role": "assistant", "content": [{"text": kit.target(t.example),
                                                                             "train": "pos"}]}] for t in clean]
    conversations += [[t.messages()[0], {"role": "assistant",
                                         "content": n.segments(config.marker, config.reasons, config.mistake_loss)}]
                      for t, n in chosen]
    order = rng.permutation(len(conversations))
    # "samples" counts the on-policy answers drawn (a summary key, kept as written since schema 1)
    counts = {"sequences": len(conversations), "clean": len(clean), "negatives": len(chosen),
              "negatives_wanted": wanted, "negative_pool": len(pool),
              "by_source": dict(Counter(n.source for _, n in chosen)), "samples": len(answers or []),
              "reused_negatives": len(chosen) > len(pool),
              "example_negatives": ["".join(s["text"] for s in n.segments(config.marker, config.reasons, "none"))
                                    for _, n in chosen[:3]]}
    return {"counts": counts, "conversations": [conversations[i] for i in order]}


def evaluate(model_dir: Path, task: Task, kit: MistakeKit, config: InSeCConfig, seed: int) -> list[Trajectory]:
    """Answers on the eval split, each read under the marker semantics: the turn's verdict scores the final answer
    and `metadata["insec"]` keeps the marker counts, so metrics come from the saved trajectories alone."""
    from selfcorrect.backends import build_backend

    examples = task.examples(config.eval_split, config.eval_limit)
    with closing(build_backend(config.backend, str(model_dir), config.backend_options)) as backend:
        trajectories = answer(backend, task, examples, config, config.sampling(task, config.eval_temperature), seed)
    reasons = marker_tokens(kit, config.granularity, config.marker, config.reasons)[1:]
    read = reader(kit, config.granularity, config.marker, reasons, task.score)
    for traj in trajectories:
        reading = read(traj.example, traj.last_answer.text)
        verdict = task.score(traj.example, reading.final)
        if reading.markers == 0:
            reading.first_ok = verdict.correct
        traj.last_answer.verdict = Verdict(verdict.score, reading.final, verdict.reason)
        traj.last_answer.extracted = reading.final
        traj.metadata["insec"] = {k: v for k, v in reading.to_dict().items() if k != "final"}
    return trajectories


def prepare_base_model(out: Path, m0: Path, tokens: list[str], config: InSeCConfig) -> None:
    """Iteration 0's trained model: M0 with the marker (and reason) tokens added, into `out`."""
    add_tokens(m0, out, tokens, config.token_init)


def on_policy_answers(model: Path, task: Task, examples: list, config: InSeCConfig, seed: int) -> list[Trajectory]:
    """The model's own answers to the training questions, `samples_per_question` each, in one backend call."""
    from selfcorrect.backends import build_backend

    # closed before fine-tuning starts: a vLLM engine holds most of the GPU until it is closed
    with closing(build_backend(config.backend, str(model), config.backend_options)) as backend:
        return answer(backend, task, examples, config,
                      config.sampling(task, config.sample_temperature, config.samples_per_question), seed)


def finetune_iteration(out: Path, start_model: Path, conversations: list, config: InSeCConfig, seed: int,
                       quiet: bool) -> None:
    """Fine-tune `start_model` on the iteration's sequences, with loss on the spans each segment marks, into `out`."""
    from selfcorrect.training.finetune import finetune

    weight = config.unlikelihood_weight if config.mistake_loss == "unlikelihood" else 0.0
    ft = config.finetune.model_copy(update={"seed": seed % 2**32, "unlikelihood_weight": weight})
    finetune(start_model, conversations, out, ft, loss_on="spans", quiet=quiet)


def evaluate_iteration(store: StepStore, iteration: int, model_dir: Path, task: Task, kit: MistakeKit,
                       config: InSeCConfig, timings: dict[str, float]) -> dict[str, Any]:
    """The marker metrics of `model_dir` on the eval split; its answers are the resumable step `iter-n/eval.jsonl`."""
    seed = request_seed(config.seed, "insec-eval", iteration)
    with timed(timings, f"iter-{iteration}/eval_s"):
        trajectories = store.trajectories(f"iter-{iteration}/eval.jsonl", evaluate, model_dir, task, kit, config, seed)
    return marker_metrics(trajectories, seed=config.seed)


@removes_fresh_output_on_error
def run_insec(config: InSeCConfig, out: str | Path, resume: bool = False, quiet: bool = False) -> dict[str, Any]:
    """Iteration 0 evaluates the base model; iterations 1..N sample (on-policy only), build, train and evaluate."""
    from selfcorrect.backends import model_weights

    task = get_task(config.task, **config.task_options)
    train_examples = task.examples(config.train_split, config.train_limit)
    kit = get_kit(config.task, train_examples)
    run = RunFolder.open(out, config.model_dump(), resume=resume)
    store = StepStore(run.path)
    m0 = model_weights(config.backend, config.model)
    tokens = marker_tokens(kit, config.granularity, config.marker, config.reasons)
    prompted = _prompted(task, train_examples, config)
    timings: dict[str, float] = {}
    rows: list[dict[str, Any]] = [{"iteration": 0, "eval": evaluate_iteration(store, 0, m0, task, kit, config,
                                                                              timings)}]
    # Built after iteration 0's evaluation, so a run refused there (a prompt too long) leaves no folder behind.
    # The SFT control never says the marker, so it trains the base model as it is.
    base = m0 if config.negatives == "none" else store.folder("iter-0/model", prepare_base_model, m0, tokens, config)
    latest = base
    for n in range(1, config.iterations + 1):
        seed = request_seed(config.seed, "insec", n)
        with timed(timings, f"iter-{n}/sampling_s"):
            answers = None if config.negatives != "on_policy" else store.trajectories(
                f"iter-{n}/samples.jsonl", on_policy_answers, latest, task, train_examples, config, seed)
        data = store.json(f"iter-{n}/data.json", build_training_set, prompted, answers, task, kit, config, seed)
        with timed(timings, f"iter-{n}/finetune_s"):
            model_dir = store.folder(f"iter-{n}/model", finetune_iteration, latest if config.evolving else base,
                                     data["conversations"], config, seed, quiet)
        training = json.loads((model_dir / FINETUNE_FILE).read_text())
        rows.append({"iteration": n, "eval": evaluate_iteration(store, n, model_dir, task, kit, config, timings),
                     "data": data["counts"], "training": {"steps": training["steps"], "seconds": training["seconds"],
                                                          "loss_curve": training["train_loss_curve"]}})
        latest = model_dir
    summary = {"command": "insec", "negatives": config.negatives, "seed": config.seed, "task": task.describe(),
               "iterations": rows, "final": rows[-1]["eval"], "timings": timings, "model": str(latest)}
    run.write_summary(summary)
    return summary


def format_iterations(summary: dict[str, Any]) -> str:
    """Accuracy and marker behaviour per iteration, with 95% bootstrap intervals, as plain text."""

    def cell(estimate: dict[str, Any] | None) -> str:
        if estimate is None:
            return "–"
        return f"{estimate['value']:.3f} [{estimate['ci'][0]:.3f},{estimate['ci'][1]:.3f}]"

    keys = ("accuracy", "first_attempt_accuracy", "marker_rate", "marker_precision", "marker_recall",
            "i_to_c", "c_to_i")
    lines = ["iter  " + "  ".join(f"{FLIP_LABELS.get(k, k):>19}" for k in keys)]
    for row in summary["iterations"]:
        lines.append(f"{row['iteration']:>4}  " + "  ".join(f"{cell(row['eval'][k]):>19}" for k in keys))
    return "\n".join(lines)


__all__ = ["InSeCConfig", "build_training_set", "evaluate", "format_iterations", "harvest", "run_insec"]
