"""The arithmetic task: seeded questions, disjoint splits, the difficulty knob, strict final-line scoring, and an
`eval` run end to end on a scripted backend."""

import json

import pytest
import yaml

from selfcorrect.cli import main
from selfcorrect.errors import SelfCorrectError
from selfcorrect.tasks import SPLITS, get_task


def _questions(task, split):
    return [ex.fields["question"] for ex in task.examples(split)]


def test_questions_are_deterministic_per_seed_and_differ_across_seeds():
    options = {"operation": "multiply", "digits": 2}
    first, again = get_task("arithmetic", **options), get_task("arithmetic", **options)
    assert _questions(first, "test") == _questions(again, "test")
    other = get_task("arithmetic", seed=1, **options)
    assert _questions(first, "test") != _questions(other, "test")
    assert len(set(_questions(first, "test")) & set(_questions(other, "test"))) < 50


@pytest.mark.parametrize("options", [{"operation": "add", "digits": 1, "second_digits": None},
                                     {"operation": "multiply", "digits": 2},
                                     {"operation": "subtract", "digits": 2, "second_digits": 1}])
def test_splits_never_share_a_question_even_with_the_operands_swapped(options):
    task = get_task("arithmetic", sizes={"train": 10_000}, **options)
    facts = {split: {tuple(sorted((ex.metadata["a"], ex.metadata["b"]))) for ex in task.examples(split)}
             for split in SPLITS}
    assert all(facts.values())
    assert not facts["train"] & facts["validation"] and not facts["train"] & facts["test"]
    assert not facts["validation"] & facts["test"]


def test_one_digit_space_is_split_whole_and_small():
    """One digit: operands 2..9, 36 unordered additions; all of them are in some split, none twice."""
    task = get_task("arithmetic", operation="add", digits=1, second_digits=None, sizes={"train": 10_000})
    rows = [ex for split in SPLITS for ex in task.examples(split)]
    assert len(rows) == 64 and len({(ex.metadata["a"], ex.metadata["b"]) for ex in rows}) == 64


def test_the_difficulty_knob_sets_operand_ranges_and_the_gold():
    one = get_task("arithmetic", operation="multiply", digits=1, second_digits=2).examples("train")
    assert {ex.metadata["a"] for ex in one} <= set(range(2, 10))
    assert {ex.metadata["b"] for ex in one} <= set(range(10, 100))
    three = get_task("arithmetic", operation="add", digits=3, second_digits=None).examples("validation")
    assert all(100 <= ex.metadata[k] <= 999 for ex in three for k in ("a", "b"))
    assert all(ex.gold == ex.metadata["a"] + ex.metadata["b"] for ex in three)
    minus = get_task("arithmetic", operation="subtract", digits=2).examples("test")
    assert all(ex.gold == ex.metadata["a"] - ex.metadata["b"] >= 0 for ex in minus)
    assert minus[0].fields["question"] == f"What is {minus[0].metadata['a']} - {minus[0].metadata['b']}?"


def test_bad_options_fail_cleanly():
    with pytest.raises(SelfCorrectError, match="unknown operation 'divide'; known: add, subtract, multiply"):
        get_task("arithmetic", operation="divide")
    with pytest.raises(SelfCorrectError, match=r"digits must be in \[1, 3\], got 4"):
        get_task("arithmetic", digits=4)


def test_scoring_accepts_only_the_right_final_answer_line():
    task = get_task("arithmetic", operation="multiply", digits=2)
    example = task.examples("test")[0]
    gold = example.gold
    assert 'last line of the form "Answer: <number>"' in task.question(example)
    assert task.score(example, f"Answer: {gold}").correct
    assert task.score(example, f"{example.metadata['a']} times {example.metadata['b']}\n\nanswer: {gold:,}.").correct
    assert task.score(example, f"The answer is {gold}.").correct
    assert not task.score(example, f"{example.metadata['a']} times {example.metadata['b']} = {gold}").correct
    missing = [f"{gold}", f"Answer: {gold}\nI hope this helps.", f"Answer: {gold} apples", ""]
    for text in missing:
        verdict = task.score(example, text)
        assert not verdict.correct and verdict.extracted is None and verdict.reason.startswith("no answer line"), text
    wrong = task.score(example, f"It is {gold}, no wait.\nAnswer: {gold + 1}")
    assert not wrong.correct and wrong.extracted == str(gold + 1)
    assert wrong.reason == f"wrong number: answer line says {gold + 1}, gold {gold}"


def test_eval_on_a_scripted_backend_gives_accuracy_by_round_and_flips_by_first_error(tmp_path, capsys):
    """Four questions: right twice; no line then fixed (a format fix); wrong number then fixed; right then the line
    dropped."""
    options = {"operation": "add", "digits": 2}
    task = get_task("arithmetic", **options)
    examples = task.examples("validation", limit=4)
    line = [f"Answer: {ex.gold}" for ex in examples]
    answers = [[line[0], line[0]], [str(examples[1].gold), line[1]], [f"Answer: {examples[2].gold + 10}", line[2]],
               [line[3], f"{examples[3].metadata['a']} + {examples[3].metadata['b']} = {examples[3].gold}"]]
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump({
        "task": "arithmetic", "task_options": options, "backend": "scripted", "model": None, "split": "validation",
        "limit": 4, "rounds": 1, "review_prompt": "arithmetic-review",
        "backend_options": {"answers": {task.question(ex): a for ex, a in zip(examples, answers, strict=True)}}}))
    assert main(["eval", "--out", str(tmp_path / "run"), "--config", str(config), "--quiet"]) == 0
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert [row["value"] for row in summary["metrics"]["accuracy_by_round"]] == [0.5, 0.75]
    assert summary["wrong_to_right_by_first_error"] == {"no answer line": 1, "wrong number": 1}
    first = json.loads((tmp_path / "run" / "samples.jsonl").read_text().splitlines()[0])
    review = [turn for turn in first["turns"] if turn["role"] == "user"][1]
    assert review["text"].endswith('End your reply with a last line of the form "Answer: <number>".')
    assert "acc@t2" in capsys.readouterr().out
