"""STaSC, Self-Taught Self-Correction (arXiv 2503.08681): fine-tune a model, iteration after iteration, on its own
corrections that improved on its initial answers.

Iteration n: (1) sample N_init initial answers per training question from M_init (M0 for Fixed init, M_{n-1} for
Evolving init); (2) sample N_corr corrections of each from M_{n-1} (the correction prompt sees the question and the
initial answer, never the gold); (3) keep the pairs the filter accepts (Improving: r(y2) > r(y1); Non-Decreasing:
improving *or* both correct — the paper's set, not the reference code's correct->correct only); (4) fine-tune from M0
(Fixed FT) or M_{n-1} (Evolving FT) with loss on the correction tokens only, the mask coming from the chat template.
Variants are named Init/Filter/FT, e.g. EIE (Evolving init, Improving, Evolving FT, the default).

Controls at equal budget (same number of training examples and optimiser steps as a STaSC run, read from its
folder with `budget_from`), because extra training alone moves accuracy (a STaR control did in the sandbox prototype):
`method: star` fine-tunes on the model's own correct first attempts; `method: gold` on gold answers.
`replay_share` mixes correct first attempts (plain format) into every training set, so correction-only training
does not erode the first attempt.

Every step is saved (`iter-n/generation.jsonl`, `selection.json`, `model/`, `eval-*`), so `--resume` continues from
the last finished step and reproduces the uninterrupted result.
"""

from __future__ import annotations

import json
from contextlib import closing
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import Field, field_validator

from selfcorrect.backends.base import Backend, Temperature, request_seed
from selfcorrect.config_blocks import ModelBlock, SamplingBlock, SeedBlock, TaskBlock, block_values
from selfcorrect.errors import SelfCorrectError
from selfcorrect.methods.steps import StepStore, timed
from selfcorrect.prompts import get_prompt, load_prompts
from selfcorrect.rounds import add_instruction, generate, start
from selfcorrect.runs import RunFolder, removes_fresh_output_on_error
from selfcorrect.tasks import Task, get_task
from selfcorrect.tracking import Tracker
from selfcorrect.training.finetune import FINETUNE_FILE, FinetuneConfig
from selfcorrect.trajectory import Trajectory

VARIANTS = tuple(f"{i}{f}{t}" for i in "EF" for f in "IN" for t in "EF")


def sandbox_finetune_defaults() -> FinetuneConfig:
    """Fine-tuning that suits the 0.4M-parameter sandbox model (the paper's lr 7e-6 is for 1.5B-parameter models)."""
    return FinetuneConfig(learning_rate=5e-4, batch_size=64, epochs=1, lr_scheduler="constant_with_warmup",
                          warmup_ratio=0.1, weight_decay=0.01)


class STaSCConfig(SeedBlock, SamplingBlock, ModelBlock, TaskBlock):
    """`selfcorrect stasc`: every design choice of the paper, plus the controls.

    Task, model, sampling and seed settings come from the shared blocks (config_blocks.py).
    """

    #: Fine-tuning needs weights, so a model is required.
    model: str = "sandbox"
    #: The paper samples initial answers and corrections at temperature 1.0 (eval decodes greedily by default).
    temperature: Temperature = 1.0
    variant: str = "EIE"
    method: Literal["stasc", "star", "gold"] = "stasc"
    budget_from: str | None = None
    iterations: int = Field(3, ge=1)
    n_init: int = Field(4, ge=1)
    n_corr: int = Field(4, ge=1)
    train_split: str = "train"
    train_limit: int | None = None
    max_kept: int | None = 3000
    replay_share: float = Field(0.0, ge=0.0, lt=1.0)
    replay_source: Literal["correct_first_attempts", "pretraining"] = "correct_first_attempts"
    eval_splits: list[str] = ["validation", "test"]
    eval_temperatures: list[Temperature] = [1.0, 0.0]
    eval_limit: int | None = None
    select_split: str = "validation"
    select_temperature: Temperature = 1.0
    review_prompt: str = "review"
    finetune: FinetuneConfig = Field(default_factory=sandbox_finetune_defaults)
    report_to: Literal["wandb", "mlflow", "tensorboard"] | None = None

    @field_validator("variant")
    @classmethod
    def _known_variant(cls, value: str) -> str:
        value = value.upper()
        if value not in VARIANTS:
            raise ValueError(f"unknown variant {value!r}; the 8 variants are {', '.join(VARIANTS)}")
        return value

    @property
    def evolving_init(self) -> bool:
        return self.variant[0] == "E"

    @property
    def filter(self) -> str:
        return "improving" if self.variant[1] == "I" else "non_decreasing"

    @property
    def evolving_ft(self) -> bool:
        return self.variant[2] == "E"


def accepted(trajectory: Trajectory, rule: str) -> bool:
    """The paper's filters on a (initial answer, correction) pair."""
    first, second = trajectory.model_turns()[:2]
    r1, r2 = first.verdict.score, second.verdict.score
    return r2 > r1 or (rule == "non_decreasing" and r2 == r1 and r1 >= 1.0)


def sample_pairs(init_backend: Backend, corr_backend: Backend, task: Task, examples: list, config: STaSCConfig,
                 seed: int) -> list[Trajectory]:
    """N_init initial answers per question, then N_corr corrections of each: two backend calls in all."""
    first = sample_first_attempts(init_backend, task, examples, config, config.n_init, seed)
    return sample_corrections(corr_backend, first, task, config, seed)


def sample_first_attempts(backend: Backend, task: Task, examples: list, config: STaSCConfig, n: int,
                          seed: int) -> list[Trajectory]:
    prompts = load_prompts(config.prompts_file)
    trajectories = start(task, examples)
    add_instruction(trajectories, task, get_prompt(prompts, config.question_prompt), 1)
    return generate(backend, trajectories, task, kind="answer", round_index=1, params=config.sampling(task, n),
                    seed=seed, fan_out="a")


def sample_corrections(backend: Backend, trajectories: list[Trajectory], task: Task, config: STaSCConfig,
                       seed: int) -> list[Trajectory]:
    """N_corr corrections of each initial answer, in one backend call."""
    add_instruction(trajectories, task, get_prompt(load_prompts(config.prompts_file), config.review_prompt), 2)
    return generate(backend, trajectories, task, kind="correction", round_index=2,
                    params=config.sampling(task, config.n_corr), seed=seed, fan_out="c")


def _counts(trajectories: list[Trajectory]) -> dict[str, int]:
    from selfcorrect.analysis.metrics import transition_counts

    return transition_counts(trajectories) if trajectories else {"I->C": 0, "C->C": 0, "C->I": 0, "I->I": 0}


def _subsample(items: list, size: int, rng: np.random.Generator, replace: bool = False) -> list:
    if not items or size <= 0:
        return []
    if len(items) <= size and not replace:
        return list(items)
    picks = rng.choice(len(items), size=size, replace=replace or len(items) < size)
    return [items[i] for i in sorted(picks)]


def _plain(trajectory: Trajectory) -> list[dict[str, str]]:
    """The first exchange only (question, first answer): the format of STaR and replay examples."""
    return trajectory.messages()[:2]


def select_training_set(generation: list[Trajectory], config: STaSCConfig, seed: int,
                        budget: dict[str, int] | None) -> dict[str, Any]:
    """Step (3): what the fine-tuning step trains on, with the counts the paper reports (sampled and kept pairs)."""
    rng = np.random.default_rng(seed)
    correct_first = {}
    for traj in generation:
        first = traj.model_turns()[0]
        if first.verdict.correct:
            correct_first.setdefault((traj.example.id, first.text), traj)
    replay_pool = list(correct_first.values())
    if config.method == "stasc":
        kept = [t for t in generation if accepted(t, config.filter)]
        chosen = _subsample(kept, config.max_kept or len(kept), rng)
        main = [t.messages() for t in chosen]
        info = {"sampled": _counts(generation), "kept": _counts(kept), "n_kept": len(kept), "n_used": len(chosen)}
    elif config.method == "star":
        chosen = _subsample(replay_pool, budget["examples"], rng, replace=True)
        main = [_plain(t) for t in chosen]
        info = {"n_correct_first_attempts": len(replay_pool), "n_used": len(chosen)}
    else:
        examples = {t.example.id: t for t in generation}
        chosen = _subsample(list(examples.values()), budget["examples"], rng, replace=True)
        main = [[_plain(t)[0], {"role": "assistant", "content": gold_answer(t)}] for t in chosen]
        info = {"n_used": len(chosen)}
    n_replay = round(len(main) * config.replay_share / (1 - config.replay_share)) if config.replay_share else 0
    if config.replay_source == "pretraining":
        replay = pretraining_replay(config, n_replay, seed)
    else:
        replay = [_plain(t) for t in _subsample(replay_pool, n_replay, rng, replace=True)]
    return {"conversations": main, "replay": replay, **info, "n_replay": len(replay)}


def pretraining_replay(config: STaSCConfig, count: int, seed: int) -> list[list[dict[str, str]]]:
    """Replay from the pretraining distribution; only sandbox tasks can generate theirs."""
    replay = get_task(config.task, **config.task_options).pretraining_replay(count, seed)
    if replay is None:
        raise SelfCorrectError(f"replay_source 'pretraining' needs a sandbox task that can generate its pretraining "
                               f"data; task {config.task!r} cannot (use 'correct_first_attempts')")
    return replay


def gold_answer(trajectory: Trajectory) -> str:
    gold = trajectory.example.gold
    return gold[0] if isinstance(gold, list) else str(gold)


def _budget(config: STaSCConfig, iteration: int) -> dict[str, int] | None:
    if config.method == "stasc":
        return None
    if not config.budget_from:
        raise SelfCorrectError(f"method {config.method!r} is an equal-budget control: set budget_from to a STaSC run")
    stasc_run = RunFolder(Path(config.budget_from))
    if not stasc_run.finished:
        raise SelfCorrectError(f"budget_from: {stasc_run.summary_path} not found "
                               "(run the STaSC run to completion first)")
    iterations = stasc_run.read_summary()["iterations"]
    row = next((r for r in iterations if r["iteration"] == iteration), None)
    if row is None:
        raise SelfCorrectError(f"budget_from: {stasc_run.summary_path} has no iteration {iteration}")
    if "training" not in row:  # the STaSC run kept nothing that iteration: its control trains on nothing too
        return {"examples": 0, "steps": 0}
    return {"examples": row["training"]["n_used"], "steps": row["training"]["steps"]}


def evaluate(model_dir: Path, run: Path, prefix: str, config: STaSCConfig, quiet: bool) -> dict[str, Any]:
    """acc@t1, acc@t2 and flips on every eval split and temperature, each an ordinary resumable `eval` run."""
    from selfcorrect.methods.evaluate import EvalConfig, run_eval

    # the same task, prompts, backend, seed, top-p and answer length as the samples trained on; the temperature
    # is the evaluation's own
    shared = block_values(config, TaskBlock, ModelBlock, SeedBlock)
    results: dict[str, Any] = {}
    for split in config.eval_splits:
        for temperature in config.eval_temperatures:
            out = run / prefix / f"eval-{split}-T{temperature:g}"
            finished = RunFolder(out)
            if finished.finished:
                metrics = finished.read_summary()["metrics"]
            else:
                eval_config = EvalConfig(**{**shared, "model": str(model_dir)}, split=split, limit=config.eval_limit,
                                         rounds=1, temperature=temperature, top_p=config.top_p,
                                         max_new_tokens=config.max_new_tokens, review_prompt=config.review_prompt,
                                         cache=False)
                metrics = run_eval(eval_config, out, resume=out.exists(), quiet=quiet)["metrics"]
            results[f"{split}@T{temperature:g}"] = metrics
    return results


def _public(selection: dict[str, Any]) -> dict[str, Any]:
    """The selection's counts, without the training conversations themselves."""
    return {k: v for k, v in selection.items() if k not in ("conversations", "replay")}


def _row(iteration: int, evals: dict[str, Any], training: dict[str, Any] | None,
         selection: dict[str, Any] | None) -> dict[str, Any]:
    row: dict[str, Any] = {"iteration": iteration, "eval": evals}
    if training is not None:
        row["training"] = {"steps": training["steps"], "loss_curve": training["train_loss_curve"],
                           "seconds": training["seconds"], "n_used": selection["n_used"] + selection["n_replay"]}
        row["selection"] = _public(selection)
    return row


def generate_training_data(config: STaSCConfig, task: Task, examples: list, m0: Path, latest: Path, iteration: int,
                           seed: int) -> list[Trajectory]:
    """Steps (1) and (2): initial answers from M_init, corrections of them from M_{n-1} (`latest`). A control
    samples first attempts only, as many per question as STaSC generates in all (its generation budget)."""
    if config.method != "stasc":
        attempts_per_question = config.n_init * (1 + config.n_corr)
        with _engine(config, latest) as backend:
            return sample_first_attempts(backend, task, examples, config, attempts_per_question, seed)
    if config.evolving_init or iteration == 1:
        with _engine(config, latest) as backend:
            return sample_pairs(backend, backend, task, examples, config, seed)
    with _engine(config, m0) as init:
        first = sample_first_attempts(init, task, examples, config, config.n_init, seed)
    with _engine(config, latest) as backend:
        return sample_corrections(backend, first, task, config, seed)


def _engine(config: STaSCConfig, model: Path) -> closing[Backend]:
    """One engine at a time, each closed before the next is built and before fine-tuning: a vLLM engine holds most
    of the GPU until it is closed."""
    from selfcorrect.backends import build_backend

    return closing(build_backend(config.backend, str(model), config.backend_options))


def finetune_iteration(out: Path, base: Path, selection: dict[str, Any], config: STaSCConfig,
                       budget: dict[str, int] | None, seed: int, quiet: bool) -> None:
    """Step (4): fine-tune `base` (M0 or M_{n-1}) on the selection, with loss on the correction only, into `out`."""
    from selfcorrect.training.finetune import finetune

    # the fine-tuning seed: 31 bits of the iteration's seed (published sandbox runs were made with this)
    ft = config.finetune.model_copy(update={"seed": seed % 2**31, "report_to": config.report_to,
                                            **({"max_steps": budget["steps"]} if budget else {})})
    finetune(base, selection["conversations"], out, ft, loss_on="last_assistant",
             replay=selection["replay"] or None, quiet=quiet)


def evaluate_iteration(iteration: int, model_dir: Path, selection: dict[str, Any], run: Path, config: STaSCConfig,
                       quiet: bool) -> dict[str, Any]:
    """The summary row of an iteration that trained: its model evaluated, with its training and selection counts."""
    training = json.loads((model_dir / FINETUNE_FILE).read_text())
    return _row(iteration, evaluate(model_dir, run, f"iter-{iteration}", config, quiet), training, selection)


@removes_fresh_output_on_error
def run_stasc(config: STaSCConfig, out: str | Path, resume: bool = False, quiet: bool = False) -> dict[str, Any]:
    """Iteration 0 evaluates M0; iterations 1..N generate, select, fine-tune and evaluate, each step resumable."""
    from selfcorrect.backends import model_weights

    task = get_task(config.task, **config.task_options)
    run = RunFolder.open(out, config.model_dump(), resume=resume)
    store = StepStore(run.path)
    m0 = model_weights(config.backend, config.model)
    train_examples = task.examples(config.train_split, config.train_limit)
    timings: dict[str, float] = {}
    tracker = Tracker(config.report_to, run.path, config.model_dump())
    rows = [_row(0, evaluate(m0, run.path, "iter-0", config, quiet), None, None)]
    tracker.log(rows[0]["eval"], step=0)
    latest = m0
    for n in range(1, config.iterations + 1):
        seed = request_seed(config.seed, "stasc", n)
        budget = _budget(config, n)
        with timed(timings, f"iter-{n}/generation_s"):
            pairs = store.trajectories(f"iter-{n}/generation.jsonl", generate_training_data, config, task,
                                       train_examples, m0, latest, n, seed)
        selection = select_training_set(pairs, config, seed, budget)
        store.json(f"iter-{n}/selection.json", _public, selection)
        if not selection["conversations"]:
            # The paper meets this too (Qwen, N_init = N_corr = 1: "no improving corrections"): M_n = M_{n-1}.
            rows.append({**_row(n, rows[-1]["eval"], None, None), "selection": _public(selection),
                         "note": "no training examples kept; model unchanged"})
            continue
        base = latest if config.evolving_ft else m0
        with timed(timings, f"iter-{n}/finetune_s"):
            model_dir = store.folder(f"iter-{n}/model", finetune_iteration, base, selection, config, budget, seed,
                                     quiet)
        rows.append(evaluate_iteration(n, model_dir, selection, run.path, config, quiet))
        tracker.log({**rows[-1]["eval"], "train/steps": rows[-1]["training"]["steps"],
                     "train/kept": selection["n_used"]}, step=n)
        latest = model_dir
    tracker.close()
    summary = {"command": "stasc", "variant": config.variant, "method": config.method, "seed": config.seed,
               "task": task.describe(), "iterations": rows, "selection": choose_iteration(rows, config),
               "timings": timings}
    run.write_summary(summary)
    return summary


def choose_iteration(rows: list[dict[str, Any]], config: STaSCConfig) -> dict[str, Any]:
    """The reported iteration is chosen on validation acc@t2; the paper's max over iterations (on test) is kept too,
    labelled, because selecting on the test set is optimistic."""
    key = f"{config.select_split}@T{config.select_temperature:g}"
    if key not in rows[0]["eval"]:
        return {"note": f"no {key} evaluation to select on"}

    def acc(row: dict[str, Any], where: str, t: int) -> float:
        return row["eval"][where]["accuracy_by_round"][t - 1]["value"]

    best = max(rows, key=lambda r: (acc(r, key, 2), -r["iteration"]))
    result: dict[str, Any] = {"selected_on": key, "iteration": best["iteration"]}
    test_key = f"test@T{config.select_temperature:g}"
    if test_key in rows[0]["eval"]:
        result["test_at_selected"] = {"acc@t1": acc(best, test_key, 1), "acc@t2": acc(best, test_key, 2)}
        result["paper_style_max_over_iterations_on_test (optimistic)"] = {
            "acc@t1": max(acc(r, test_key, 1) for r in rows), "acc@t2": max(acc(r, test_key, 2) for r in rows)}
    return result


def iteration_table(summary: dict[str, Any], where: str) -> str:
    """acc@t1 / acc@t2 / Δ per iteration for one eval split and temperature, as plain text."""
    lines = [f"{'iter':>4}  {'acc@t1':>17}  {'acc@t2':>17}  {'delta':>8}  {'I->C':>6}  {'C->I':>6}"]
    for row in summary["iterations"]:
        metrics = row["eval"].get(where)
        if metrics is None:
            continue
        a1, a2 = metrics["accuracy_by_round"][:2]
        fmt = lambda m: f"{m['value']:.3f} [{m['ci'][0]:.3f},{m['ci'][1]:.3f}]"  # noqa: E731
        lines.append(f"{row['iteration']:>4}  {fmt(a1):>17}  {fmt(a2):>17}  {metrics['delta']['value']:>+8.3f}  "
                     f"{metrics['delta_i_to_c']['value']:>6.3f}  {metrics['delta_c_to_i']['value']:>6.3f}")
    return "\n".join(lines)


__all__ = ["VARIANTS", "STaSCConfig", "accepted", "choose_iteration", "iteration_table", "run_stasc",
           "select_training_set"]
