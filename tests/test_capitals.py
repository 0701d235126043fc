"""The capitals task: hand-written tables with aliases, splits by fact, the questions inclusion scoring cannot judge
left out, alias scoring, and an `eval` run end to end on a scripted backend."""

import json

import pytest
import yaml

from selfcorrect.cli import main
from selfcorrect.errors import SelfCorrectError
from selfcorrect.rewards import mentions
from selfcorrect.tasks import SPLITS, get_task
from selfcorrect.tasks import capitals as capitals_module


def _by_split(task):
    return {split: task.examples(split) for split in SPLITS}


def test_a_fact_is_in_one_split_and_the_split_is_fixed_by_the_seed():
    carved = _by_split(get_task("capitals"))
    entities = {split: {(ex.metadata["kind"] == "capital-of-state", ex.metadata["entity"]) for ex in rows}
                for split, rows in carved.items()}
    assert not entities["train"] & entities["validation"] and not entities["train"] & entities["test"]
    assert not entities["validation"] & entities["test"]
    assert [ex.id for ex in get_task("capitals").examples("test")] == [ex.id for ex in carved["test"]]
    other = get_task("capitals", seed=1).examples("test")
    assert {ex.id for ex in other} != {ex.id for ex in carved["test"]}
    sizes = {split: len(rows) for split, rows in carved.items()}
    assert sizes["validation"] >= 100 and sizes["test"] >= 100 and sizes["train"] > sizes["test"]


def test_both_questions_of_a_country_share_its_split():
    carved = _by_split(get_task("capitals", kinds=["capital-of-country", "country-of-capital"]))
    split_of = {}
    for split, rows in carved.items():
        for ex in rows:
            assert split_of.setdefault(ex.metadata["entity"], split) == split, ex.id


def test_questions_the_inclusion_score_cannot_judge_are_left_out():
    asked = {ex.fields["question"]: ex for rows in _by_split(get_task("capitals")).values() for ex in rows}
    assert "What is the capital of Singapore?" not in asked  # the question holds its own answer
    assert "Kuwait City is the capital of which country?" not in asked
    assert "Conakry is the capital of which country?" not in asked  # Guinea lies inside "Papua New Guinea"
    assert "Khartoum is the capital of which country?" not in asked  # Sudan inside "South Sudan"
    assert "Malabo is the capital of which country?" in asked  # Equatorial Guinea is inside no other answer
    assert "What is the capital of Mexico?" in asked
    for question, ex in asked.items():
        assert not any(mentions(question, alias) for alias in ex.gold), question


def test_aliases_and_several_capitals_score_right_and_other_names_wrong():
    task = get_task("capitals")
    by_id = {ex.id: ex for rows in _by_split(task).values() for ex in rows}
    ukraine, bolivia = by_id["capital-of-country:Ukraine"], by_id["capital-of-country:Bolivia"]
    assert task.score(ukraine, "The capital of Ukraine is Kiev.").correct
    assert task.score(ukraine, "Kyiv").correct and not task.score(ukraine, "It is Lviv.").correct
    assert task.score(bolivia, "La Paz").correct and task.score(bolivia, "Sucre, officially.").correct
    burma = by_id["country-of-capital:Myanmar"]
    assert burma.fields["question"] == "Naypyidaw is the capital of which country?"
    assert task.score(burma, "Burma.").correct and not task.score(burma, "Thailand").correct
    texas = by_id["capital-of-state:Texas"]
    assert texas.fields["question"] == "What is the capital of the US state of Texas?"
    assert task.score(texas, "Austin").correct and not task.score(texas, "Houston").correct
    exact = get_task("capitals", reward="exact_match")
    assert exact.score(ukraine, "Kyiv").correct and not exact.score(ukraine, "The capital is Kyiv.").correct


def test_kinds_pick_the_questions_and_bad_options_fail_cleanly():
    states = get_task("capitals", kinds=["capital-of-state"])
    rows = [ex for split in SPLITS for ex in states.examples(split)]
    assert len(rows) == 50 and {ex.metadata["kind"] for ex in rows} == {"capital-of-state"}
    with pytest.raises(SelfCorrectError, match="unknown kinds \\['rivers'\\]"):
        get_task("capitals", kinds=["rivers"])
    with pytest.raises(SelfCorrectError, match="unknown split 'dev'"):
        states.examples("dev")


def test_a_malformed_table_line_is_named_with_file_and_line(tmp_path, monkeypatch):
    (tmp_path / "capitals").mkdir()
    (tmp_path / "capitals" / "countries.tsv").write_text("# header\nFrance\tParis\nSpain Madrid\n", encoding="utf-8")
    monkeypatch.setattr(capitals_module, "bundled", lambda relative: tmp_path / relative)
    with pytest.raises(SelfCorrectError, match=r"countries.tsv, line 3: expected 'entity<TAB>capital'"):
        capitals_module.read_table("countries")


def test_eval_on_a_scripted_backend_scores_each_round_by_alias(tmp_path):
    task = get_task("capitals")
    examples = task.examples("validation", limit=3)
    right = [f"It is {ex.gold[-1]}." for ex in examples]
    answers = [[right[0], right[0]], ["I do not know.", right[1]], [right[2], "Atlantis."]]
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump({
        "task": "capitals", "backend": "scripted", "model": None, "split": "validation", "limit": 3, "rounds": 1,
        "backend_options": {"answers": {task.question(ex): a for ex, a in zip(examples, answers, strict=True)}}}))
    assert main(["eval", "--out", str(tmp_path / "run"), "--config", str(config), "--quiet"]) == 0
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert [row["value"] for row in summary["metrics"]["accuracy_by_round"]] == pytest.approx([2 / 3, 2 / 3])
    expected: dict[str, list[tuple[float, float]]] = {}
    for ex, (first, last) in zip(examples, [(1, 1), (0, 1), (1, 0)], strict=True):
        expected.setdefault(ex.metadata["kind"], []).append((first, last))
    assert summary["accuracy_by_kind"] == {
        kind: {"n": len(pairs), "first": pytest.approx(sum(p[0] for p in pairs) / len(pairs)),
               "last": pytest.approx(sum(p[1] for p in pairs) / len(pairs))} for kind, pairs in expected.items()}
    first = json.loads((tmp_path / "run" / "samples.jsonl").read_text().splitlines()[0])
    assert first["example"]["id"] == examples[0].id and first["example"]["gold"] == examples[0].gold
