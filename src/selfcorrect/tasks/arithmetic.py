"""Arithmetic: short questions ("What is 7 + 23?") generated from a seed, answered on a strict final line.

Why this task: a small model sits near the floor on NQ-open and GSM8K, so a review has few wrong answers it could
fix; the difficulty knob (`operation`, `digits`, `second_digits`) lets any model be put where it gets some
questions right and some wrong (docs/real-model.md, "a task with headroom", says where SmolLM2 sits).

Strict scoring. The reply must END with a line that states the answer, "Answer: <integer>" as asked or "The answer
is <integer>." (the form a small model writes unasked), and that number is the answer; a right number anywhere else
in the text scores 0, so a reply that ends on an equation or a restated operand is not an answer. Every turn is
parsed the same way and asked for the same line (round 1 by `question`, reviews by the `arithmetic-review` prompt),
and a review that only restates an answer in the required form is told apart in the summary
(`wrong_to_right_by_first_error`) from one that fixed a number.

Splits. Each question, the unordered operand pair for + and ×, is put in one split by a seeded hash, so train,
validation and test never share a question however many are drawn; within a split, questions come in hash order.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from selfcorrect.errors import SelfCorrectError
from selfcorrect.tasks.base import SPLITS, Task
from selfcorrect.trajectory import Example, Trajectory, Verdict

#: What every turn is asked for, word for word (round 1 through `question`, reviews through `fields.format`).
ANSWER_FORMAT = 'End your reply with a last line of the form "Answer: <number>".'
#: The last non-empty line, whole: "Answer:" or "The answer is" (any case) and an integer (thousands commas allowed).
ANSWER_LINE = re.compile(r"(?:answer:|the answer is)\s*(-?(?:\d{1,3}(?:,\d{3})+|\d+))\.?", re.IGNORECASE)
#: Hash buckets (of 10) per split: 60% train, 20% validation, 20% test of the question space.
SPLIT_BUCKETS = {"train": range(0, 6), "validation": range(6, 8), "test": range(8, 10)}
MAX_DIGITS = 3


@dataclass(frozen=True)
class Operation:
    symbol: str
    apply: Callable[[np.ndarray, np.ndarray], np.ndarray]
    commutative: bool


OPERATIONS = {
    "add": Operation("+", np.add, commutative=True),
    "subtract": Operation("-", np.subtract, commutative=False),
    "multiply": Operation("times", np.multiply, commutative=True),
}


def operand_range(digits: int) -> range:
    """The operands with `digits` digits; one digit leaves out 0 and 1, whose questions are trivial."""
    if not 1 <= digits <= MAX_DIGITS:
        raise SelfCorrectError(f"arithmetic: digits must be in [1, {MAX_DIGITS}], got {digits}")
    return range(2, 10) if digits == 1 else range(10 ** (digits - 1), 10**digits)


def mix(values: np.ndarray) -> np.ndarray:
    """SplitMix64's finaliser: a fixed, well-spread 64-bit hash of each value (numpy, so a whole space at once)."""
    z = values.astype(np.uint64)
    with np.errstate(over="ignore"):
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def parse_answer_line(text: str) -> int | None:
    """The integer of the reply's last non-empty line when that line is exactly an answer line, else None."""
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    found = ANSWER_LINE.fullmatch(lines[-1]) if lines else None
    return int(found.group(1).replace(",", "")) if found else None


class ArithmeticTask(Task):
    """`operation` (add, subtract, multiply) of a `digits`-digit and a `second_digits`-digit operand (None: the
    same); subtraction keeps the first operand the larger, so every gold is a non-negative integer.

    The default, one digit + two digits, is the easiest setting with 100+ validation questions (one-digit settings
    have 64 questions in all); docs/real-model.md has SmolLM2's accuracy on it."""

    name = "arithmetic"
    description = ("short arithmetic questions from a seed (operation, digits); gold = the exact integer; "
                   "strict 'Answer: <number>' last line")
    max_new_tokens: ClassVar[int] = 64
    measures = "accuracy"

    def __init__(self, operation: str = "add", digits: int = 1, second_digits: int | None = 2, seed: int = 0,
                 sizes: dict[str, int] | None = None) -> None:
        if operation not in OPERATIONS:
            raise SelfCorrectError(f"arithmetic: unknown operation {operation!r}; known: {', '.join(OPERATIONS)}")
        self.operation, self.digits, self.seed = operation, digits, seed
        self.second_digits = digits if second_digits is None else second_digits
        self.ranges = operand_range(self.digits), operand_range(self.second_digits)
        self.sizes = {"train": 2000, "validation": 200, "test": 200, **(sizes or {})}
        self._pairs: dict[str, np.ndarray] | None = None

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "operation": self.operation, "digits": self.digits,
                "second_digits": self.second_digits, "seed": self.seed, "sizes": self.sizes}

    def pairs(self, split: str) -> np.ndarray:
        """The split's (a, b) operand pairs, at most `sizes[split]`: deterministic in the options and the seed."""
        if split not in SPLITS:
            raise SelfCorrectError(f"arithmetic: unknown split {split!r}; known: {', '.join(SPLITS)}")
        if self._pairs is None:
            self._pairs = self._carve()
        return self._pairs[split]

    def _carve(self) -> dict[str, np.ndarray]:
        first, second = self.ranges
        a, b = (grid.ravel() for grid in np.meshgrid(np.array(first), np.array(second), indexing="ij"))
        if self.operation == "subtract":
            a, b = a[a >= b], b[a >= b]
        low, high = (np.minimum(a, b), np.maximum(a, b)) if OPERATIONS[self.operation].commutative else (a, b)
        salt = int(mix(np.array([self.seed * len(OPERATIONS) + list(OPERATIONS).index(self.operation)]))[0])
        key = mix(mix(low.astype(np.uint64) * np.uint64(10**MAX_DIGITS) + high.astype(np.uint64)) ^ np.uint64(salt))
        bucket = key % np.uint64(10)
        carved = {}
        for split in SPLITS:
            chosen = np.flatnonzero(np.isin(bucket, list(SPLIT_BUCKETS[split])))
            chosen = chosen[np.argsort(key[chosen], kind="stable")][:self.sizes[split]]
            carved[split] = np.stack([a[chosen], b[chosen]], axis=1)
        return carved

    def examples(self, split: str, limit: int | None = None) -> list[Example]:
        op = OPERATIONS[self.operation]
        rows = self.pairs(split)[:limit]
        gold = op.apply(rows[:, 0], rows[:, 1])
        return [Example(id=f"{split}-{i}", gold=int(g),
                        fields={"question": f"What is {a} {op.symbol} {b}?", "format": ANSWER_FORMAT},
                        metadata={"split": split, "a": int(a), "b": int(b)})
                for i, ((a, b), g) in enumerate(zip(rows.tolist(), gold.tolist(), strict=True))]

    def question(self, example: Example) -> str:
        return f"{example.fields['question']}\n\n{example.fields['format']}"

    def score(self, example: Example, text: str) -> Verdict:
        """1 when the last line states the gold; the reason says whether the answer line was missing or wrong."""
        number = parse_answer_line(text)
        if number is None:
            return Verdict(0.0, None, "no answer line: the last line is neither 'Answer: <integer>' nor "
                                      "'The answer is <integer>.'")
        if number != example.gold:
            return Verdict(0.0, str(number), f"wrong number: answer line says {number}, gold {example.gold}")
        return Verdict(1.0, str(number), f"answer line equals gold {example.gold}")

    def extras(self, trajectories: Sequence[Trajectory]) -> dict[str, Any]:
        """Wrong-to-right flips (first answer to last) by what was wrong first: a missing answer line (a format
        fix) or a wrong number (a corrected result)."""
        fixes = {"no answer line": 0, "wrong number": 0}
        for trajectory in trajectories:
            verdicts = [turn.verdict for turn in trajectory.model_turns()]
            if len(verdicts) >= 2 and verdicts[0] and verdicts[-1] and verdicts[-1].correct \
                    and not verdicts[0].correct:
                fixes["no answer line" if verdicts[0].extracted is None else "wrong number"] += 1
        return {"wrong_to_right_by_first_error": fixes}
