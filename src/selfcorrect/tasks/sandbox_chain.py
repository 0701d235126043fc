"""The default sandbox task: a running sum mod 10 written as a visible trace of (input, state) pairs.

Encoding. A question is N digits `d_1..d_N` (e.g. `660487647593`). The state is `p_i = (p_{i-1} + d_i) mod 10` with
`p_0 = 0`, and the answer is the trace `d_1 p_1 d_2 p_2 ... d_N p_N` written as 2N digits with no separators
(`6 6 6 2 0 2 4 6 ...` -> `666202...`). The sandbox tokenizer gives every character its own token, and the sandbox
chat template renders a conversation as `<bos>Q<question>A<answer><eos>C<correction><eos>`.

Why this shape (what the project's earlier sandbox prototypes showed):
- *Checking a step is easier than producing it.* Producing `p_i` means fetching the i-th question digit and adding
  it to the previous state; checking a written step needs only the three neighbouring trace tokens
  (`p_{i-1}`, `d_i`, `p_i`). A wrong step is locatable in the visible trace.
- *No lucky hits.* The reward is the exact trace. A wrong step propagates into every later state, so no wrong
  computation can produce the right trace; the lucky-hit rate of a final-digit reward (10% by chance) is reported
  beside it to show what a gameable reward would have counted.
- *Imperfect at a loss plateau, never by early stopping.* Training traces come from a noisy writer that slips with
  probability `noise` at each step (writing a uniformly random wrong state and continuing consistently from it), and
  optionally "forgets to add" a chosen digit (`bias_digit`, a systematic, mode-level slip that greedy decoding keeps).
  A model trained to convergence reproduces the writer's slips, so its sampled first-attempt accuracy is about
  `(1 - noise) ** N` while its loss sits at the noise-entropy floor.
- *Corrections that genuinely depend on the first attempt.* A correction target copies the first attempt up to its
  first wrong step, then recomputes from the last correct state with the same noisy writer (so the corrector is never
  handed the answer). Copying is noise-free and only the suffix is recomputed: that is the corrector's edge, and
  a caveat for any conclusion drawn from this sandbox.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from selfcorrect.errors import SelfCorrectError
from selfcorrect.tasks.base import SPLITS, Task
from selfcorrect.tasks.corruptions import MistakeKit, StepFormat
from selfcorrect.trajectory import Example, Trajectory, Verdict

SPLIT_SALT = {"train": 1, "validation": 2, "test": 3}


@dataclass(frozen=True)
class ChainSpec:
    """Difficulty knobs of the chain task."""

    n_digits: int = 12
    noise: float = 0.06
    bias_digit: int | None = None
    bias_prob: float = 0.0

    def __post_init__(self) -> None:
        if not 2 <= self.n_digits <= 32:
            raise SelfCorrectError(f"sandbox-chain: n_digits must be in [2, 32], got {self.n_digits}")
        if not 0.0 <= self.noise < 1.0 or not 0.0 <= self.bias_prob <= 1.0:
            raise SelfCorrectError("sandbox-chain: noise must be in [0, 1) and bias_prob in [0, 1]")


def gold_states(digits: np.ndarray) -> np.ndarray:
    """Running sums mod 10 along the last axis."""
    return np.cumsum(digits, axis=-1) % 10


def noisy_states(digits: np.ndarray, spec: ChainSpec, rng: np.random.Generator,
                 first_step: np.ndarray | None = None) -> np.ndarray:
    """States written by the noisy writer, vectorised over a batch of questions (rows).

    Steps before `first_step` (per row, default 0) keep their gold states. From there on each step adds the digit
    to the previous written state, except that with probability `bias_prob` a `bias_digit` is not added, and with
    probability `noise` a uniformly random wrong state is written; later steps continue from whatever was written.
    """
    rows, n = digits.shape
    first_step = np.zeros(rows, dtype=np.int64) if first_step is None else first_step
    states = gold_states(digits)
    for i in range(n):
        prev = states[:, i - 1] if i > 0 else np.zeros(rows, dtype=np.int64)
        value = (prev + digits[:, i]) % 10
        if spec.bias_digit is not None and spec.bias_prob > 0:
            forget = (digits[:, i] == spec.bias_digit) & (rng.random(rows) < spec.bias_prob)
            value = np.where(forget, prev, value)
        slip = rng.random(rows) < spec.noise
        wrong = (value + rng.integers(1, 10, size=rows)) % 10
        states[:, i] = np.where(i >= first_step, np.where(slip, wrong, value), states[:, i])
    return states


def render_trace(digits: np.ndarray, states: np.ndarray) -> list[str]:
    pairs = np.stack([digits, states], axis=-1).reshape(digits.shape[0], -1)
    return ["".join(map(str, row)) for row in pairs]


def parse_trace(text: str, n_digits: int) -> np.ndarray | None:
    """(digits, states) of a written trace, or None when it is not exactly 2N digits."""
    text = text.strip()
    if len(text) != 2 * n_digits or not text.isdigit():
        return None
    values = np.frombuffer(text.encode(), dtype=np.uint8) - ord("0")
    return values.reshape(n_digits, 2).T.astype(np.int64)


def first_error(question: str, trace: str) -> int | None:
    """Index of the first step whose (digit, state) pair differs from the gold trace; None if the trace is right.

    A malformed trace counts as wrong from step 0.
    """
    digits = np.array([int(c) for c in question])
    parsed = parse_trace(trace, len(digits))
    if parsed is None:
        return 0
    gold = gold_states(digits)
    bad = np.flatnonzero((parsed[0] != digits) | (parsed[1] != gold))
    return int(bad[0]) if bad.size else None


def correction_targets(questions: list[str], attempts: list[str], spec: ChainSpec,
                       rng: np.random.Generator) -> list[str]:
    """Gold-standard corrections of `attempts`: copy up to the first wrong step, recompute the rest (noisily).

    A correct attempt is copied unchanged. A malformed attempt is recomputed from scratch.
    """
    digits = np.array([[int(c) for c in q] for q in questions])
    firsts = [first_error(q, a) for q, a in zip(questions, attempts, strict=True)]
    k = np.array([len(q) if f is None else f for q, f in zip(questions, firsts, strict=True)], dtype=np.int64)
    return render_trace(digits, noisy_states(digits, spec, rng, first_step=k))


# --- InSeC mistakes (tasks/corruptions.py): the trace splits into (digit, state) pairs ---------------------------

def _pairs(text: str) -> list[str]:
    return [text[i:i + 2] for i in range(0, len(text), 2)]


def _chain_reason(wrong: str, gold: str) -> str:
    """A wrong step either copied the wrong digit or added wrongly."""
    return "digit" if wrong[:1] != gold[:1] else "state"


def _digits(example: Example) -> np.ndarray:
    return np.array([int(c) for c in example.fields["question"]], dtype=np.int64)


def _trace(digits: np.ndarray, states: np.ndarray) -> str:
    return render_trace(digits[None, :], states[None, :])[0]


def _propagate(digits: np.ndarray, states: np.ndarray, start: int) -> np.ndarray:
    """States from `start` on recomputed from whatever state precedes them (consistent propagation)."""
    states = states.copy()
    for i in range(start, len(digits)):
        states[i] = ((states[i - 1] if i else 0) + digits[i]) % 10
    return states


def _wrong_value(value: int, rng: np.random.Generator) -> int:
    return int((value + rng.integers(1, 10)) % 10)


def chain_state_propagated(example: Example, rng: np.random.Generator) -> str:
    """A wrong state at a random step, later steps continuing from it: the noisy writer's slip."""
    digits = _digits(example)
    states = gold_states(digits)
    k = int(rng.integers(len(digits)))
    states[k] = _wrong_value(states[k], rng)
    return _trace(digits, _propagate(digits, states, k + 1))


def chain_state_local(example: Example, rng: np.random.Generator) -> str:
    """A wrong state at a random step, later steps still gold (an error that does not propagate)."""
    digits = _digits(example)
    states = gold_states(digits)
    k = int(rng.integers(len(digits)))
    states[k] = _wrong_value(states[k], rng)
    return _trace(digits, states)


def chain_digit_swapped(example: Example, rng: np.random.Generator) -> str:
    """The digit of another position copied into a random step (a swapped entity), then added consistently."""
    digits = _digits(example)
    written = digits.copy()
    k = int(rng.integers(len(digits)))
    others = [int(d) for d in digits if d != digits[k]]
    written[k] = rng.choice(others) if others else _wrong_value(digits[k], rng)
    states = _propagate(written, gold_states(digits), k)
    return _trace(written, states)


def chain_step_skipped(example: Example, rng: np.random.Generator) -> str:
    """One step left out: the next digit is added to the state before it, and the trace is one step short.

    Only steps whose next digit differs are skipped, so the first wrong step is where the skip happens (skipping
    the last step leaves a strict prefix of the gold, with no wrong step to mark; it is the fallback only).
    """
    digits = _digits(example)
    candidates = [i for i in range(len(digits) - 1) if digits[i + 1] != digits[i]] or [len(digits) - 1]
    kept = np.delete(digits, int(rng.choice(candidates)))
    return _trace(kept, gold_states(kept))


MISTAKES = MistakeKit(
    target=lambda example: str(example.gold),
    corruptions={"state_propagated": chain_state_propagated, "state_local": chain_state_local,
                 "digit_swapped": chain_digit_swapped, "step_skipped": chain_step_skipped},
    steps=StepFormat(split=_pairs, reasons=("digit", "state"), reason=_chain_reason))


class QuestionStream:
    """Fresh random questions that never collide with an evaluation split."""

    def __init__(self, n_digits: int, excluded: set[str], rng: np.random.Generator):
        self.n_digits, self.excluded, self.rng = n_digits, excluded, rng

    def draw(self, count: int) -> list[str]:
        out: list[str] = []
        while len(out) < count:
            block = self.rng.integers(0, 10, size=(count - len(out), self.n_digits))
            out.extend(q for q in ("".join(map(str, row)) for row in block) if q not in self.excluded)
        return out


class SandboxChainTask(Task):
    name = "sandbox-chain"
    description = "Running sum mod 10 with a visible (digit, state) trace; exact-trace reward (sandbox default)."
    max_new_tokens = 64

    def __init__(self, n_digits: int = 12, noise: float = 0.06, bias_digit: int | None = None,
                 bias_prob: float = 0.0, seed: int = 0, sizes: dict[str, int] | None = None):
        self.spec = ChainSpec(n_digits=n_digits, noise=noise, bias_digit=bias_digit, bias_prob=bias_prob)
        self.seed = seed
        self.sizes = {"train": 1000, "validation": 500, "test": 500, **(sizes or {})}
        space = 10**n_digits
        if sum(self.sizes.values()) > space // 2:
            raise SelfCorrectError(f"sandbox-chain: splits of {sum(self.sizes.values())} questions need more than "
                                   f"half of the {space} possible {n_digits}-digit questions (pretraining needs the "
                                   "rest); pass smaller sizes or more digits")
        self.max_new_tokens = 2 * n_digits + 4

    def describe(self) -> dict:
        return {"name": self.name, "n_digits": self.spec.n_digits, "noise": self.spec.noise,
                "bias_digit": self.spec.bias_digit, "bias_prob": self.spec.bias_prob, "seed": self.seed,
                "sizes": self.sizes}

    def questions(self, split: str) -> list[str]:
        """The split's questions: deterministic in (seed, split) and disjoint across splits by construction."""
        if split not in SPLITS:
            raise SelfCorrectError(f"sandbox-chain: unknown split {split!r}; known: {', '.join(SPLITS)}")
        taken = set()
        for other in SPLITS:
            out = []
            rng = np.random.default_rng([self.seed, SPLIT_SALT[other]])
            while len(out) < self.sizes[other]:
                q = "".join(map(str, rng.integers(0, 10, size=self.spec.n_digits)))
                if q not in taken:
                    taken.add(q)
                    out.append(q)
            if other == split:
                return out
        raise AssertionError("unreachable")

    def excluded_questions(self) -> set[str]:
        """Every question of every split: pretraining must never see them."""
        return {q for split in SPLITS for q in self.questions(split)}

    def examples(self, split: str, limit: int | None = None) -> list[Example]:
        qs = self.questions(split)[:limit]
        return [Example(id=f"{split}-{i}", fields={"question": q}, gold=self.gold_trace(q), metadata={"split": split})
                for i, q in enumerate(qs)]

    def question(self, example: Example) -> str:
        return example.fields["question"]

    @staticmethod
    def gold_trace(question: str) -> str:
        digits = np.array([[int(c) for c in question]])
        return render_trace(digits, gold_states(digits))[0]

    def score(self, example: Example, text: str) -> Verdict:
        """Exact trace. The reason records the first wrong step and whether a final-digit reward would be fooled."""
        trace = text.strip()
        error = first_error(example.fields["question"], trace)
        if error is None:
            return Verdict(1.0, trace, "exact trace")
        lucky = len(trace) == len(example.gold) and trace[-1:] == example.gold[-1:]
        reason = f"first wrong step {error + 1}" + ("; lucky final digit" if lucky else "")
        return Verdict(0.0, trace, reason)

    @classmethod
    def mistake_kit(cls, pool: Sequence[Example]) -> MistakeKit:
        return MISTAKES

    def pretraining_replay(self, count: int, seed: int) -> list[list[dict[str, str]]]:
        return writer_replay(self, count, seed)

    def extras(self, trajectories: Sequence[Trajectory]) -> dict[str, Any]:
        first = [t.model_turns()[0].verdict for t in trajectories if t.model_turns()]
        return {"lucky_hit_rate_t1": lucky_hit_rate([v for v in first if v is not None])}


def lucky_hit_rate(verdicts: list[Verdict]) -> float | None:
    """Share of wrong traces whose final digit is right: what a final-answer reward would have wrongly rewarded."""
    wrong = [v for v in verdicts if not v.correct]
    if not wrong:
        return None
    return sum("lucky final digit" in v.reason for v in wrong) / len(wrong)


def writer_replay(task: SandboxChainTask, count: int, seed: int) -> list[list[dict[str, str]]]:
    """`count` plain conversations from the pretraining distribution (noisy-writer traces on fresh questions).

    Replaying them while fine-tuning keeps the first attempt's slip rate where pretraining left it; replaying the
    model's own *correct* attempts instead removes the slips, and with them anything left to correct.
    """
    rng = np.random.default_rng([seed, 13])
    questions = QuestionStream(task.spec.n_digits, task.excluded_questions(), rng).draw(count)
    digits = np.array([[int(c) for c in q] for q in questions])
    traces = render_trace(digits, noisy_states(digits, task.spec, rng))
    return [[{"role": "user", "content": q}, {"role": "assistant", "content": t}] for q, t in zip(questions, traces,
                                                                                                   strict=True)]
