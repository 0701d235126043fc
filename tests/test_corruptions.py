"""Task corruptions for InSeC's synthetic negatives: each makes the mistake it names, and only that one."""

from __future__ import annotations

import numpy as np
import pytest

from selfcorrect.errors import SelfCorrectError
from selfcorrect.tasks import get_kit
from selfcorrect.tasks.corruptions import first_wrong_step
from selfcorrect.tasks.sandbox_chain import SandboxChainTask, first_error
from selfcorrect.trajectory import Example

# digits 1 2 3 4 -> states 1 3 6 0, written as (digit, state) pairs
CHAIN = Example(id="c", fields={"question": "1234"}, gold="11233640")


def _pairs(trace: str) -> list[tuple[int, int]]:
    return [(int(trace[i]), int(trace[i + 1])) for i in range(0, len(trace), 2)]


def _consistent_after(pairs: list[tuple[int, int]], start: int) -> bool:
    """Every state from `start` on is the previous written state plus the written digit."""
    return all(pairs[i][1] == ((pairs[i - 1][1] if i else 0) + pairs[i][0]) % 10 for i in range(start, len(pairs)))


def test_first_wrong_step_covers_equal_different_short_and_long():
    gold = ["11", "23", "36", "40"]
    assert first_wrong_step(gold, gold) is None
    assert first_wrong_step(["11", "23", "37", "41"], gold) == 2
    assert first_wrong_step(["11", "23"], gold) == 2  # a strict prefix: the missing step
    assert first_wrong_step([*gold, "55"], gold) == 4


@pytest.mark.parametrize("seed", range(20))
def test_sandbox_corruptions_make_exactly_their_mistake(seed):
    corruptions = get_kit("sandbox-chain").corruptions
    rng = np.random.default_rng(seed)
    question = [1, 2, 3, 4]

    propagated = _pairs(corruptions["state_propagated"](CHAIN, rng))
    assert [d for d, _ in propagated] == question
    k = first_error("1234", "".join(f"{d}{s}" for d, s in propagated))
    assert k is not None and _consistent_after(propagated, k + 1) and not _consistent_after(propagated, k)

    local = _pairs(corruptions["state_local"](CHAIN, rng))
    assert [d for d, _ in local] == question
    assert sum(a != b for a, b in zip(local, _pairs(CHAIN.gold), strict=True)) == 1  # later states stay gold

    swapped = _pairs(corruptions["digit_swapped"](CHAIN, rng))
    changed = [i for i, (d, _) in enumerate(swapped) if d != question[i]]
    assert len(changed) == 1 and swapped[changed[0]][0] in question  # another position's digit
    assert _consistent_after(swapped, 0)

    skipped = _pairs(corruptions["step_skipped"](CHAIN, rng))
    assert len(skipped) == 3 and _consistent_after(skipped, 0)
    digits = [d for d, _ in skipped]
    assert any(digits == question[:i] + question[i + 1:] for i in range(4))


def test_sandbox_corruptions_are_reproducible_and_wrong_on_real_questions():
    task = SandboxChainTask()
    corruptions = get_kit("sandbox-chain").corruptions
    for example in task.examples("train", 30):
        for name, corrupt in corruptions.items():
            first = corrupt(example, np.random.default_rng(3))
            assert first == corrupt(example, np.random.default_rng(3))
            assert not task.score(example, first).correct, name


def test_qa_corruptions_swap_in_another_example_or_slip():
    pool = [Example(id="a", fields={"question": "capital of France?"}, gold=["Paris", "paris, france"]),
            Example(id="b", fields={"question": "capital of Italy?"}, gold=["Rome"]),
            Example(id="c", fields={"question": "city of light?"}, gold=["Paris"])]
    swap = get_kit("nq-open", pool).corruptions["swapped_answer"]
    # "c" also answers Paris, so the only wrong answer available to "a" is "Rome"
    assert {swap(pool[0], np.random.default_rng(s)) for s in range(10)} == {"Rome"}
    assert get_kit("nq-open", pool).target(pool[0]) == "Paris"
    with pytest.raises(SelfCorrectError, match="no other example"):
        get_kit("nq-open", pool[:1]).corruptions["swapped_answer"](pool[0], np.random.default_rng(0))

    maths = Example(id="m", fields={"question": "2+2?"}, gold="4")
    slips = {get_kit("gsm8k", [maths]).corruptions["number_slip"](maths, np.random.default_rng(s)) for s in range(40)}
    assert slips <= {"-6", "2", "3", "5", "6", "14"} and len(slips) > 2

    bbq = Example(id="q", fields={"options": ["the grandfather", "the grandson", "Can't be determined"]}, gold=2)
    kit = get_kit("bbq")
    assert kit.target(bbq) == "(c) Can't be determined"
    wrong = {kit.corruptions["other_option"](bbq, np.random.default_rng(s)) for s in range(20)}
    assert wrong == {"(a) the grandfather", "(b) the grandson"}


def test_tasks_without_corruptions_are_named_in_the_error():
    with pytest.raises(SelfCorrectError,
                       match=r"advbench.*with them: bbq, capitals, gsm8k, jsonl, nq-open, sandbox-chain"):
        get_kit("advbench")
