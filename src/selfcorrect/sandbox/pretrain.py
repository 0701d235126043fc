"""Pretrain the sandbox model from scratch on the CPU: a plain nanoGPT-style loop over fresh synthetic batches.

Two phases, following the recipe that made self-correction measurable in the project's earlier sandbox prototypes:
1. *Noisy-writer phase.* Plain traces from the noisy writer, mixed from the start with correction examples whose
   first attempt also comes from the noisy writer (so the correction format is learnt early, not in a late phase
   transition).
2. *Own-attempt bootstrap.* The model samples its own first attempts (temperature 1) on fresh questions; correction
   examples now use *those* attempts, so the wrong first attempts it learns to fix look like its own errors.
Both phases train to the noise floor (imperfection comes from the writer's noise, not from stopping early), and
the questions of every evaluation split are excluded from the training stream.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from selfcorrect.config import StrictModel
from selfcorrect.sandbox.data import PAD, correction_batch, plain_batch, sequence_length
from selfcorrect.tasks.sandbox_chain import (
    ChainSpec,
    QuestionStream,
    SandboxChainTask,
    correction_targets,
    first_error,
    noisy_states,
    parse_trace,
    render_trace,
)


class PretrainConfig(StrictModel):
    """Everything that decides the sandbox model. Its hash names the cache folder."""

    n_digits: int = 12
    noise: float = 0.06
    bias_digit: int | None = None
    bias_prob: float = 0.0
    task_seed: int = 0
    split_sizes: dict[str, int] | None = None
    n_layer: int = 2
    n_embd: int = 128
    n_head: int = 4
    n_inner: int = 512
    batch_size: int = 64
    phase1_steps: int = 1200
    phase1_lr: float = 3e-3
    phase2_steps: int = 800
    phase2_lr: float = 1.5e-3
    warmup_steps: int = 50
    correction_share: float = 0.5
    bootstrap_questions: int = 8000
    bootstrap_rounds: int = 1
    eval_questions: int = 500
    log_every: int = 50
    seed: int = 0

    def task(self) -> SandboxChainTask:
        return SandboxChainTask(n_digits=self.n_digits, noise=self.noise, bias_digit=self.bias_digit,
                                bias_prob=self.bias_prob, seed=self.task_seed, sizes=self.split_sizes)


def build_model(config: PretrainConfig) -> Any:
    """A GPT-2 with learned absolute positions: at this size RoPE Llama failed to learn digit alignment on CPU."""
    from transformers import GPT2Config, GPT2LMHeadModel

    from selfcorrect.models import declare_causal_lm_loss
    from selfcorrect.sandbox.data import BOS, EOS
    from selfcorrect.sandbox.tokenizer import VOCAB

    gpt_config = GPT2Config(vocab_size=len(VOCAB), n_positions=sequence_length(config.n_digits) + 8,
                            n_embd=config.n_embd, n_layer=config.n_layer, n_head=config.n_head,
                            n_inner=config.n_inner, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
                            bos_token_id=BOS, eos_token_id=EOS, pad_token_id=PAD)
    return declare_causal_lm_loss(GPT2LMHeadModel(gpt_config))


Sampler = Callable[[Any, list[str], int], list[str]]
"""(model, questions, seed) -> sampled first attempts at temperature 1."""


def _lr_at(step: int, total: int, peak: float, warmup: int) -> float:
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = (step - warmup) / max(total - warmup, 1)
    return peak * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0))))


def train_phase(model: Any, config: PretrainConfig, steps: int, lr: float, make_batch: Callable[[], tuple],
                log: list[dict], phase: str, progress: Any = None) -> None:
    import torch

    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, betas=(0.9, 0.98), weight_decay=0.01)
    model.train()
    window: list[float] = []
    for step in range(steps):
        for group in optimizer.param_groups:
            group["lr"] = _lr_at(step, steps, lr, config.warmup_steps)
        ids, mask = make_batch()
        input_ids = torch.from_numpy(ids)
        labels = torch.where(torch.from_numpy(mask), input_ids, torch.full_like(input_ids, -100))
        attention = (input_ids != PAD).long()  # right padding: pads sit after the content and carry no loss
        loss = model(input_ids=input_ids, attention_mask=attention, labels=labels).loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        window.append(loss.item())
        if (step + 1) % config.log_every == 0 or step + 1 == steps:
            log.append({"phase": phase, "step": step + 1, "loss": float(np.mean(window))})
            window = []
        if progress is not None:
            progress(1)
    model.eval()


def noise_floor(config: PretrainConfig) -> float:
    """Expected per-token loss (nats) of a perfect imitator of the noisy writer on a plain trace.

    Per step: the digit copy is deterministic; the state has entropy H(1-e, e/9 x 9). Plus the deterministic EOS.
    """
    e = config.noise
    step_entropy = 0.0 if e == 0 else -(1 - e) * math.log(1 - e) - e * math.log(e / 9)
    return config.n_digits * step_entropy / (2 * config.n_digits + 1)


PRETRAIN_THREADS = 2
"""Torch threads during pretraining, whatever the environment says. The thread count changes floating-point
reduction order, and the correction skill appears in a phase transition that is sensitive to it: with the same seed,
1 thread gave a model whose corrections fixed 5.9% of its wrong first attempts, 2 threads one that fixed 27%.
Pinning it makes the cached model the same on every 2-core machine of this project."""


def pretrain(config: PretrainConfig, sampler: Sampler, progress: Callable[[str, int], Any] | None = None
             ) -> tuple[Any, dict[str, Any]]:
    """Train a sandbox model; returns (model, report with the loss curve, timings and the noise floor)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(PRETRAIN_THREADS)
    try:
        return _pretrain(config, sampler, progress)
    finally:
        torch.set_num_threads(threads)


def _pretrain(config: PretrainConfig, sampler: Sampler, progress: Callable[[str, int], Any] | None
              ) -> tuple[Any, dict[str, Any]]:
    import torch

    torch.manual_seed(config.seed)
    rng = np.random.default_rng([config.seed, 7])
    task = config.task()
    spec: ChainSpec = task.spec
    stream = QuestionStream(config.n_digits, task.excluded_questions(), rng)
    length = sequence_length(config.n_digits)
    model = build_model(config)
    n_corr = round(config.batch_size * config.correction_share)
    n_plain = config.batch_size - n_corr
    log: list[dict] = []
    timings: dict[str, float] = {}
    bootstrap: list[dict] = []

    def noisy_traces(questions: list[str]) -> list[str]:
        digits = np.array([[int(c) for c in q] for q in questions])
        return render_trace(digits, noisy_states(digits, spec, rng))

    def mixed_batch(attempt_source: Callable[[int], tuple[list[str], list[str]]]) -> tuple:
        plain_q = stream.draw(n_plain)
        ids_p, mask_p = plain_batch(plain_q, noisy_traces(plain_q), length)
        corr_q, attempts = attempt_source(n_corr)
        ids_c, mask_c = correction_batch(corr_q, attempts, correction_targets(corr_q, attempts, spec, rng), length)
        return np.concatenate([ids_p, ids_c]), np.concatenate([mask_p, mask_c])

    def writer_attempts(count: int) -> tuple[list[str], list[str]]:
        questions = stream.draw(count)
        return questions, noisy_traces(questions)

    start = time.perf_counter()
    tick = (lambda n: progress("phase 1", n)) if progress else None
    train_phase(model, config, config.phase1_steps, config.phase1_lr, lambda: mixed_batch(writer_attempts), log,
                "phase1", tick)
    timings["phase1_s"] = time.perf_counter() - start

    for round_index in range(config.bootstrap_rounds):
        start = time.perf_counter()
        drawn = stream.draw(config.bootstrap_questions)
        sampled = sampler(model, drawn, config.seed * 1000 + round_index)
        # A malformed attempt (not 2N digits) cannot sit in the fixed-length correction layout; they are rare.
        pool = [(q, a) for q, a in zip(drawn, sampled, strict=True) if parse_trace(a, config.n_digits) is not None]
        pool_q, pool_a = [q for q, _ in pool], [a for _, a in pool]
        timings[f"bootstrap{round_index + 1}_sampling_s"] = time.perf_counter() - start
        bootstrap.append({"round": round_index + 1, "attempts": len(drawn), "malformed": len(drawn) - len(pool),
                          "correct": sum(first_error(q, a) is None for q, a in pool)})
        picker = np.random.default_rng([config.seed, 11, round_index])

        def own_attempts(count: int, pool_q=pool_q, pool_a=pool_a, picker=picker) -> tuple[list[str], list[str]]:
            if not pool_q:  # a model too young to write one well-formed trace: keep using the writer's attempts
                return writer_attempts(count)
            picks = picker.integers(0, len(pool_q), size=count)
            return [pool_q[i] for i in picks], [pool_a[i] for i in picks]

        start = time.perf_counter()
        steps = config.phase2_steps // config.bootstrap_rounds
        tick = (lambda n: progress("phase 2 (own attempts)", n)) if progress else None
        train_phase(model, config, steps, config.phase2_lr, lambda f=own_attempts: mixed_batch(f), log,
                    f"phase2.{round_index + 1}", tick)
        timings[f"phase2.{round_index + 1}_s"] = time.perf_counter() - start

    report = {"config": config.model_dump(), "loss_curve": log, "timings": timings, "bootstrap": bootstrap,
              "torch_threads": torch.get_num_threads(),
              "noise_floor_plain": noise_floor(config),
              "parameters": sum(p.numel() for p in model.parameters())}
    return model, report


def save(model: Any, report: dict[str, Any], out_dir: str | Path) -> Path:
    """Save model + tokenizer as an ordinary HF folder, plus `pretrain_report.json`."""
    from selfcorrect.runs import write_json
    from selfcorrect.sandbox.tokenizer import save_tokenizer

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(out))
    save_tokenizer(out)
    write_json(out / "pretrain_report.json", report)
    return out


def load_report(model_dir: str | Path) -> dict[str, Any]:
    return json.loads((Path(model_dir) / "pretrain_report.json").read_text())


STUCK_RATIO = 1.2
"""Final loss / noise floor above which pretraining is reported as stuck. Of the ten models pretrained here, those
whose reviews fix their own mistakes ended at 0.68-1.04 of the floor (0.68-0.70 for the best, `phase1_lr: 1e-3`);
the five whose corrections fixed nothing ended at 1.29-2.25 (README, the fragility table)."""


def stuck_warning(report: dict[str, Any], model_dir: str | Path = "DIR") -> str | None:
    """A warning when the final loss (mean of the last 4 logged values) sits well above the plain-trace noise floor.

    A model at the floor imitates the noisy writer on first attempts and corrections alike. Stuck above it, it has
    usually learned first attempts but not corrections (they copy the attempt, slips and all), which no later
    measurement should discover by surprise.
    """
    final = float(np.mean([entry["loss"] for entry in report["loss_curve"][-4:]]))
    floor = report["noise_floor_plain"]
    if final <= STUCK_RATIO * floor:
        return None
    return (f"warning: final loss {final:.3f} is {final / floor:.2f}x the noise floor {floor:.3f}: pretraining "
            "stopped on a plateau and this model's corrections probably fix nothing; check with `selfcorrect eval "
            f"--split validation --temperature 1 --model {model_dir}`, or pretrain with another --seed")
