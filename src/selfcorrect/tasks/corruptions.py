"""What InSeC needs to know about a task's mistakes: how its answers are written, how to corrupt them, and, for
chain answers, where a step ends.

InSeC (arXiv 2412.16653) trains on `question -> mistake <marker> correction`. Its mistakes come either from the
model's own wrong answers (on-policy) or from corruption functions applied to the correct answer (synthetic). A
corruption is task knowledge — what a plausible wrong answer looks like — so each task returns its own kit
(`Task.mistake_kit`, built from the pieces here; `tasks.get_kit(name, pool)` looks one up), never guessed by the
method. Related work warns that synthetic errors often fail to teach correction because they do not
look like the model's own (Wu et al., arXiv 2512.02389); keeping each corruption named lets a
run record which kinds it injected and compare them with on-policy errors.

Per task a `MistakeKit` holds:
- `target(example)`: the correct answer as the model should write it (the clean training sequence);
- `corruptions`: `name -> fn(example, rng) -> corrupted answer`;
- `steps`: for chain answers, how a text splits into steps, so an attempt can be cut after its FIRST wrong step
  and corrected inline from there (the sandbox trace: one step = the two characters `d_i p_i`; see
  tasks/sandbox_chain.py).
QA corruptions swap in another example's gold ("swapped entity/alias"), so they need the pool of examples.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from selfcorrect.errors import SelfCorrectError
from selfcorrect.trajectory import Example

Corruption = Callable[[Example, np.random.Generator], str]


@dataclass(frozen=True)
class StepFormat:
    """How a chain answer splits into steps, and what kind of mistake a wrong step is (the optional reason tag).

    `split` must be lossless: `sep.join(split(text)) == text`, so a cut attempt is exactly what the model wrote.
    """

    split: Callable[[str], list[str]]
    sep: str = ""
    reasons: tuple[str, ...] = ("step",)
    reason: Callable[[str, str], str] = lambda wrong, gold: "step"

    def join(self, steps: Sequence[str]) -> str:
        return self.sep.join(steps)


@dataclass(frozen=True)
class MistakeKit:
    target: Callable[[Example], str]
    corruptions: Mapping[str, Corruption]
    steps: StepFormat | None = None
    answer_reasons: tuple[str, ...] = field(default=("answer",))


def first_wrong_step(steps: Sequence[str], gold: Sequence[str]) -> int | None:
    """Index of the first step that differs from the gold step at that index (a step beyond the gold's end is
    wrong); len(steps) when the attempt is a strict prefix of the gold (a missing step); None when they are equal."""
    for index, step in enumerate(steps):
        if index >= len(gold) or step != gold[index]:
            return index
    return None if len(steps) == len(gold) else len(steps)


# --- QA tasks: the gold of another example, or a near-miss number ----------------------------------------------------

def first_alias(example: Example) -> str:
    gold = example.gold
    return str(gold[0]) if isinstance(gold, list | tuple) else str(gold)


def _option_text(example: Example, index: int) -> str:
    return f"({'abc'[index]}) {example.fields['options'][index]}"


def _swap_from(pool: Sequence[Example], target: Callable[[Example], str]) -> Corruption:
    """Another example's answer, one that is not an accepted answer of this example."""

    def swapped(example: Example, rng: np.random.Generator) -> str:
        own = {str(a).strip().lower() for a in (example.gold if isinstance(example.gold, list) else [example.gold])}
        own.add(target(example).strip().lower())
        candidates = [target(other) for other in pool if other.id != example.id]
        candidates = [c for c in candidates if c.strip().lower() not in own]
        if not candidates:
            raise SelfCorrectError(f"cannot swap the answer of {example.id}: no other example in the pool has a "
                                   "different answer")
        return candidates[int(rng.integers(len(candidates)))]

    return swapped


def number_slip(example: Example, rng: np.random.Generator) -> str:
    """An arithmetic slip: the gold number off by a small nonzero amount."""
    from selfcorrect.rewards import _format, parse_number

    gold = parse_number(str(example.gold))
    if gold is None:
        raise SelfCorrectError(f"{example.id}: gold {example.gold!r} is not a number")
    return _format(gold + int(rng.choice([-10, -2, -1, 1, 2, 10])))


def _other_option(example: Example, rng: np.random.Generator) -> str:
    wrong = [i for i in range(len(example.fields["options"])) if i != example.gold]
    return _option_text(example, int(rng.choice(wrong)))


def answer_swap_kit(pool: Sequence[Example], target: Callable[[Example], str],
                    extra: Mapping[str, Corruption] | None = None) -> MistakeKit:
    """Short answers: the mistake is another example's answer from `pool` (plus any task-specific `extra`)."""
    corruptions: dict[str, Corruption] = {"swapped_answer": _swap_from(pool, target)}
    corruptions.update(extra or {})
    return MistakeKit(target=target, corruptions=corruptions)


def option_kit() -> MistakeKit:
    """Multiple choice: the answer written as `(letter) option`, the mistake another option."""
    return MistakeKit(target=lambda example: _option_text(example, int(example.gold)),
                      corruptions={"other_option": _other_option})


__all__ = ["Corruption", "MistakeKit", "StepFormat", "answer_swap_kit", "first_alias", "first_wrong_step",
           "number_slip", "option_kit"]
