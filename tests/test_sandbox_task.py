"""The sandbox chain task: encoding, reward without lucky hits, the noisy writer and correction targets."""

import numpy as np
import pytest

from selfcorrect.errors import SelfCorrectError
from selfcorrect.tasks import get_task
from selfcorrect.tasks.sandbox_chain import (
    ChainSpec,
    correction_targets,
    first_error,
    lucky_hit_rate,
    noisy_states,
    render_trace,
)


def test_gold_trace_is_digit_state_pairs():
    task = get_task("sandbox-chain", n_digits=4)
    # states: 3, 3+9=2, 2+5=7, 7+0=7
    assert task.gold_trace("3950") == "33925707"


def test_exact_trace_reward_and_lucky_hits():
    task = get_task("sandbox-chain", n_digits=4)
    example = task.examples("test", 1)[0]
    gold = example.gold
    assert task.score(example, gold).correct
    assert task.score(example, gold + "\n").correct  # surrounding whitespace is not an error
    # Break step 2 and keep the final digit right: a final-digit reward would be fooled, the exact trace is not.
    wrong_state = str((int(gold[3]) + 1) % 10)
    lucky = gold[:3] + wrong_state + gold[4:]
    verdict = task.score(example, lucky)
    assert verdict.score == 0.0 and "first wrong step 2" in verdict.reason and "lucky" in verdict.reason
    unlucky = gold[:-1] + str((int(gold[-1]) + 1) % 10)
    assert "lucky" not in task.score(example, unlucky).reason
    assert task.score(example, gold[:-1]).score == 0.0  # malformed (too short)
    assert lucky_hit_rate([task.score(example, lucky), task.score(example, unlucky), task.score(example, gold)]) == 0.5


def test_splits_are_deterministic_disjoint_and_sized():
    task = get_task("sandbox-chain", seed=3, sizes={"train": 50, "validation": 20, "test": 30})
    splits = {s: task.questions(s) for s in ("train", "validation", "test")}
    assert [len(v) for v in splits.values()] == [50, 20, 30]
    assert not set(splits["train"]) & set(splits["test"]) and not set(splits["validation"]) & set(splits["test"])
    assert splits["test"] == get_task("sandbox-chain", seed=3, sizes={"train": 50, "validation": 20,
                                                                      "test": 30}).questions("test")
    assert splits["test"] != get_task("sandbox-chain", seed=4).questions("test")[:30]
    with pytest.raises(SelfCorrectError, match="unknown split"):
        task.questions("dev")


def test_noisy_writer_slip_rate_matches_noise():
    spec = ChainSpec(n_digits=12, noise=0.1)
    rng = np.random.default_rng(0)
    digits = rng.integers(0, 10, size=(20000, 12))
    states = noisy_states(digits, spec, rng)
    prev = np.concatenate([np.zeros((20000, 1), dtype=int), states[:, :-1]], axis=1)
    slips = states != (prev + digits) % 10  # each step judged against the previous *written* state
    assert abs(slips.mean() - 0.1) < 0.005
    whole = np.array([first_error("".join(map(str, d)), t) is None
                      for d, t in zip(digits[:4000], render_trace(digits[:4000], states[:4000]), strict=True)])
    assert abs(whole.mean() - 0.9**12) < 0.03


def test_bias_digit_forgets_to_add():
    spec = ChainSpec(n_digits=3, noise=0.0, bias_digit=9, bias_prob=1.0)
    states = noisy_states(np.array([[1, 9, 2]]), spec, np.random.default_rng(0))
    assert states.tolist() == [[1, 1, 3]]


def test_correction_target_copies_prefix_then_recomputes():
    spec = ChainSpec(n_digits=4, noise=0.0)
    question = "3950"
    attempt = "33935808"  # step 2 wrong (3 instead of 2), later steps consistent with the wrong value
    assert first_error(question, attempt) == 1
    target = correction_targets([question], [attempt], spec, np.random.default_rng(0))[0]
    assert target == "33925707"
    assert correction_targets([question], ["33925707"], spec, np.random.default_rng(0)) == ["33925707"]
    assert correction_targets([question], ["junk"], spec, np.random.default_rng(0)) == ["33925707"]


def test_noisy_correction_never_changes_the_verified_prefix():
    spec = ChainSpec(n_digits=12, noise=0.3)
    rng = np.random.default_rng(1)
    digits = rng.integers(0, 10, size=(500, 12))
    questions = ["".join(map(str, d)) for d in digits]
    attempts = render_trace(digits, noisy_states(digits, spec, rng))
    targets = correction_targets(questions, attempts, spec, rng)
    for q, a, t in zip(questions, attempts, targets, strict=True):
        k = first_error(q, a)
        if k is None:
            assert t == a
        else:
            assert t[:2 * k] == a[:2 * k] and t[2 * k] == q[k]  # prefix copied, then the right digit is read


def test_splits_that_do_not_fit_the_question_space_are_refused():
    with pytest.raises(SelfCorrectError, match="possible 2-digit questions"):
        get_task("sandbox-chain", n_digits=2)
    assert len(get_task("sandbox-chain", n_digits=3, sizes={"train": 40, "validation": 20, "test": 20})
               .questions("test")) == 20
