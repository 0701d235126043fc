"""What InSeC needs to know about a task's mistakes: how its answers are written, how to corrupt them, and, for
chain answers, where a step ends.

InSeC (arXiv 2412.16653) trains on `question -> mistake <marker> correction`. Its mistakes come either from the
model's own wrong samples (on-policy) or from corruption functions applied to the correct answer (synthetic). A
corruption is task knowledge — what a plausible wrong answer looks like — so it is registered here per task, never
guessed by the method. Related work warns that synthetic errors often fail to teach correction because they do not
look like the model's own (Wu et al., arXiv 2512.02389); keeping each corruption named lets a
run record which kinds it injected and compare them with on-policy errors.

Per task a `MistakeKit` holds:
- `target(example)`: the correct answer as the model should write it (the clean training sequence);
- `corruptions`: `name -> fn(example, rng) -> corrupted answer` (`get_corruptions(task_name)` returns these);
- `steps`: for chain answers, how a text splits into steps, so an attempt can be cut after its FIRST wrong step
  and corrected inline from there (the sandbox trace: one step = the two characters `d_i p_i`).
QA corruptions swap in another example's gold ("swapped entity/alias"), so they need the pool of examples.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from selfcorrect.errors import SelfCorrectError, suggest
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


# --- sandbox-chain: running sum mod 10 written as (digit, state) pairs ---------------------------------------------

def _pairs(text: str) -> list[str]:
    return [text[i:i + 2] for i in range(0, len(text), 2)]


def _chain_reason(wrong: str, gold: str) -> str:
    """A wrong step either copied the wrong digit or added wrongly."""
    return "digit" if wrong[:1] != gold[:1] else "state"


def _digits(example: Example) -> np.ndarray:
    return np.array([int(c) for c in example.fields["question"]], dtype=np.int64)


def _trace(digits: np.ndarray, states: np.ndarray) -> str:
    from selfcorrect.tasks.sandbox_chain import render_trace

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
    from selfcorrect.tasks.sandbox_chain import gold_states

    digits = _digits(example)
    states = gold_states(digits)
    k = int(rng.integers(len(digits)))
    states[k] = _wrong_value(states[k], rng)
    return _trace(digits, _propagate(digits, states, k + 1))


def chain_state_local(example: Example, rng: np.random.Generator) -> str:
    """A wrong state at a random step, later steps still gold (an error that does not propagate)."""
    from selfcorrect.tasks.sandbox_chain import gold_states

    digits = _digits(example)
    states = gold_states(digits)
    k = int(rng.integers(len(digits)))
    states[k] = _wrong_value(states[k], rng)
    return _trace(digits, states)


def chain_digit_swapped(example: Example, rng: np.random.Generator) -> str:
    """The digit of another position copied into a random step (a swapped entity), then added consistently."""
    from selfcorrect.tasks.sandbox_chain import gold_states

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
    from selfcorrect.tasks.sandbox_chain import gold_states

    digits = _digits(example)
    candidates = [i for i in range(len(digits) - 1) if digits[i + 1] != digits[i]] or [len(digits) - 1]
    kept = np.delete(digits, int(rng.choice(candidates)))
    return _trace(kept, gold_states(kept))


SANDBOX_CHAIN = MistakeKit(
    target=lambda example: str(example.gold),
    corruptions={"state_propagated": chain_state_propagated, "state_local": chain_state_local,
                 "digit_swapped": chain_digit_swapped, "step_skipped": chain_step_skipped},
    steps=StepFormat(split=_pairs, reasons=("digit", "state"), reason=_chain_reason))


# --- QA tasks: the gold of another example, or a near-miss number ----------------------------------------------------

def _first_alias(example: Example) -> str:
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


def _number_slip(example: Example, rng: np.random.Generator) -> str:
    """An arithmetic slip: the gold number off by a small nonzero amount."""
    from selfcorrect.rewards import _format, parse_number

    gold = parse_number(str(example.gold))
    if gold is None:
        raise SelfCorrectError(f"{example.id}: gold {example.gold!r} is not a number")
    return _format(gold + int(rng.choice([-10, -2, -1, 1, 2, 10])))


def _other_option(example: Example, rng: np.random.Generator) -> str:
    wrong = [i for i in range(len(example.fields["options"])) if i != example.gold]
    return _option_text(example, int(rng.choice(wrong)))


def _swap_kit(target: Callable[[Example], str], extra: Mapping[str, Corruption] | None = None
              ) -> Callable[[Sequence[Example]], MistakeKit]:
    def build(pool: Sequence[Example]) -> MistakeKit:
        corruptions: dict[str, Corruption] = {"swapped_answer": _swap_from(pool, target)}
        corruptions.update(extra or {})
        return MistakeKit(target=target, corruptions=corruptions)

    return build


_KITS: dict[str, Callable[[Sequence[Example]], MistakeKit]] = {
    "sandbox-chain": lambda pool: SANDBOX_CHAIN,
    "nq-open": _swap_kit(_first_alias),
    "jsonl": _swap_kit(_first_alias),
    "gsm8k": _swap_kit(lambda example: str(example.gold), {"number_slip": _number_slip}),
    "bbq": lambda pool: MistakeKit(target=lambda example: _option_text(example, int(example.gold)),
                                   corruptions={"other_option": _other_option}),
}


def kit_names() -> list[str]:
    return sorted(_KITS)


def get_kit(task_name: str, pool: Sequence[Example] = ()) -> MistakeKit:
    """The task's mistake kit; `pool` is the examples that swap corruptions draw other answers from."""
    if task_name not in _KITS:
        raise SelfCorrectError(f"task {task_name!r} has no InSeC corruptions{suggest(task_name, kit_names())}; "
                               f"tasks with them: {', '.join(kit_names())}")
    return _KITS[task_name](pool)


def get_corruptions(task_name: str, pool: Sequence[Example] = ()) -> dict[str, Corruption]:
    """`name -> fn(example, rng) -> corrupted answer` for a task (QA swaps draw from `pool`)."""
    return dict(get_kit(task_name, pool).corruptions)


__all__ = ["Corruption", "MistakeKit", "StepFormat", "first_wrong_step", "get_corruptions", "get_kit", "kit_names"]
