"""InSeC: the inline format, reading outputs with markers, metrics by hand, equal-budget training sets, added tokens
that survive a reload, no gradient on mistake tokens under the default loss, and a resumable run end to end."""

from __future__ import annotations

import json
import os
import sys

import numpy as np
import pytest

from selfcorrect.config import build_config
from selfcorrect.errors import SelfCorrectError
from selfcorrect.methods.insec import InSeCConfig, _prompted, build_training_set
from selfcorrect.methods.insec_data import marker_metrics, negative_from, read_output, reader
from selfcorrect.tasks import get_kit
from selfcorrect.tasks.sandbox_chain import SandboxChainTask
from selfcorrect.trajectory import Example, Trajectory, Turn, Verdict

os.environ.setdefault("HF_HUB_OFFLINE", "1")
KIT = get_kit("sandbox-chain")
# digits 1 2 3 4 -> states 1 3 6 0
CHAIN = Example(id="c", fields={"question": "1234"}, gold="11233640")



def test_step_negative_is_cut_after_the_first_wrong_step():
    state_slip = negative_from(KIT, CHAIN, "11233741", "step", "on_policy")  # step 3 adds wrongly, then propagates
    assert (state_slip.prefix, state_slip.mistake, state_slip.correction, state_slip.reason) == \
        ("11233", "7", "3640", "state")
    digit_slip = negative_from(KIT, CHAIN, "11234741", "step", "on_policy")  # step 3 copies 4 instead of 3
    assert (digit_slip.prefix, digit_slip.mistake, digit_slip.correction, digit_slip.reason) == \
        ("1123", "47", "3640", "digit")
    assert negative_from(KIT, CHAIN, "11233640", "step", "x") is None  # right: nothing to mark
    assert negative_from(KIT, CHAIN, "1123", "step", "x") is None  # only missing steps: nothing to mark
    whole = negative_from(KIT, CHAIN, "11233741", "answer", "x")
    assert (whole.prefix, whole.mistake, whole.correction) == ("", "11233741", "11233640")


def test_segments_put_the_loss_where_the_option_says():
    negative = negative_from(KIT, CHAIN, "11233741", "step", "on_policy")
    assert negative.segments("<fix>", False, "none") == [
        {"text": "11233", "train": "pos"}, {"text": "7", "train": "none"}, {"text": "<fix>3640", "train": "pos"}]
    assert negative.segments("<fix>", False, "unlikelihood")[1] == {"text": "7", "train": "neg"}
    assert negative.segments("<fix>", False, "full")[1] == {"text": "7", "train": "pos"}
    assert negative.segments("<fix>", True, "none")[2]["text"] == "<fix><why-state>3640"
    early = negative_from(KIT, CHAIN, "21", "step", "x")  # wrong from the first character: no prefix segment
    assert early.segments("<fix>", False, "none") == [{"text": "21", "train": "none"},
                                                      {"text": "<fix>11233640", "train": "pos"}]


@pytest.mark.parametrize(("text", "final", "first_ok", "counts"), [
    ("11233640", "11233640", True, (0, 0, 0, 0)),
    ("112337<fix>3640", "11233640", False, (1, 1, 1, 1)),  # caught and fixed
    ("112336<fix>3640", "11233640", True, (1, 0, 0, 0)),  # a false alarm that rewrites the same step
    ("112337<fix><why-state>3640", "11233640", False, (1, 1, 1, 1)),  # the reason token is skipped
    ("11233741", "11233741", False, (0, 0, 1, 0)),  # one missed error (its propagation is not a new one)
    ("112337<fix>38<fix>3640", "11233640", False, (2, 2, 2, 2)),  # the rewrite slips again and is fixed again
    ("<fix>11233640", "11233640", True, (1, 0, 0, 0)),  # a marker with nothing before it replaces nothing
])
def test_outputs_are_read_marker_by_marker(text, final, first_ok, counts):
    read = reader(KIT, "step", "<fix>", ["<why-state>", "<why-digit>"], SandboxChainTask().score)
    reading = read(CHAIN, text)
    assert (reading.final, reading.first_ok) == (final, first_ok)
    assert (reading.markers, reading.precise, reading.errors, reading.caught) == counts


def test_answer_level_reading_keeps_what_follows_the_last_marker():
    def score(_example, text):
        return Verdict(float(text == "Paris"))

    reading = read_output("Rome <fix> Lyon<fix>Paris", "<fix>", [], lambda s: [s.strip()] if s.strip() else [],
                          lambda units: units[-1] if units else "", lambda _i, unit: not score(None, unit).correct)
    assert (reading.final, reading.first_ok, reading.markers, reading.precise, reading.errors, reading.caught) == \
        ("Paris", False, 2, 2, 2, 2)


def _evaluated(example_id: str, correct: bool, **reading) -> Trajectory:
    traj = Trajectory(id=example_id, example=Example(id=example_id, fields={}))
    traj.add(Turn(role="assistant", kind="answer", round=1, text="", verdict=Verdict(float(correct))))
    traj.metadata["insec"] = {"first_ok": False, "markers": 0, "precise": 0, "errors": 0, "caught": 0, **reading}
    return traj


def test_marker_metrics_by_hand():
    trajectories = [
        _evaluated("a", True, markers=1, precise=1, errors=1, caught=1),  # wrong -> right across a marker
        _evaluated("b", False, errors=1),  # a missed error
        _evaluated("c", False, first_ok=True, markers=1),  # a false alarm that broke a right answer
        _evaluated("d", True, first_ok=True),
    ]
    metrics = marker_metrics(trajectories)
    values = {k: v["value"] for k, v in metrics.items() if isinstance(v, dict) and "value" in v}
    assert values == {"accuracy": 0.5, "first_attempt_accuracy": 0.5, "marker_rate": 0.5, "marker_precision": 0.5,
                      "marker_recall": 0.5, "i_to_c": 0.25, "c_to_i": 0.25}
    assert metrics["counts"] == {"markers": 2, "precise": 1, "errors": 2, "caught": 1, "marked_outputs": 2,
                                 "i_to_c": 1, "c_to_i": 1}
    lo, hi = metrics["marker_precision"]["ci"]
    assert 0.0 <= lo <= 0.5 <= hi <= 1.0
    silent = marker_metrics([_evaluated("d", True, first_ok=True)])
    assert silent["marker_precision"] is None and silent["marker_recall"] is None


def _samples(prompted: list[Trajectory], answers: list[tuple[int, str]]) -> list[Trajectory]:
    """Sampled first answers: (index of the prompted question, text)."""
    out = []
    for i, (index, text) in enumerate(answers):
        traj = prompted[index].child(f"a{i}")
        traj.add(Turn(role="assistant", kind="answer", round=1, text=text))
        out.append(traj)
    return out


def test_training_sets_have_equal_size_in_every_arm_and_the_requested_share():
    task = SandboxChainTask(n_digits=4)
    questions = ["1234", "5555", "9081", "2222", "7364", "0000", "4829", "1111"]
    examples = [Example(id=f"q{i}", fields={"question": q}, gold=task.gold_trace(q)) for i, q in enumerate(questions)]
    prompted = _prompted(task, examples, InSeCConfig())

    sft = build_training_set(prompted, None, task, KIT, InSeCConfig(negatives="none"), seed=0)
    assert sft["counts"]["sequences"] == 8 and sft["counts"]["negatives"] == 0
    pairs = sorted((c[0]["content"], c[1]["content"][0]["text"]) for c in sft["conversations"])
    assert pairs == sorted((e.fields["question"], e.gold) for e in examples)  # each clean example once, learnt
    assert all(c[1]["content"][0]["train"] == "pos" for c in sft["conversations"])

    synthetic = build_training_set(prompted, None, task, KIT,
                                   InSeCConfig(negatives="synthetic", corruptions=["state_local"]), seed=0)
    assert synthetic["counts"]["sequences"] == 8
    assert synthetic["counts"]["negatives"] == 4 and synthetic["counts"]["by_source"] == {"state_local": 4}
    marked = [c for c in synthetic["conversations"] if len(c[1]["content"]) > 1]
    assert len(marked) == 4 and all("<fix>" in c[1]["content"][-1]["text"] for c in marked)

    # "1234" -> gold 11233640: a right sample, one that adds wrongly at step 3; "5555" -> gold 55505550: a right
    # sample, one that copies 6 at step 2 (and adds consistently after it)
    samples = _samples(prompted, [(0, "11233640"), (0, "11233741"), (1, "55615651"), (1, "55505550")])
    on_policy = build_training_set(prompted, samples, task, KIT, InSeCConfig(negative_share=0.75), seed=0)
    counts = on_policy["counts"]
    assert (counts["sequences"], counts["negatives"], counts["negative_pool"]) == (8, 6, 2)
    assert counts["reused_negatives"] and counts["by_source"] == {"on_policy": 6}
    texts = {(c[0]["content"], "".join(s["text"] for s in c[1]["content"])) for c in on_policy["conversations"]
             if len(c[1]["content"]) > 1}
    assert texts == {("1234", "112337<fix>3640"), ("5555", "5561<fix>505550")}  # cut after the first wrong step

    right_only = _samples(prompted, [(i, e.gold) for i, e in enumerate(examples)])
    none_wrong = build_training_set(prompted, right_only, task, KIT, InSeCConfig(), seed=0)
    assert none_wrong["counts"]["negatives"] == 0 and none_wrong["counts"]["sequences"] == 8  # filled with clean

    with pytest.raises(SelfCorrectError, match="unknown corruption"):
        build_training_set(prompted, None, task, KIT, InSeCConfig(negatives="synthetic", corruptions=["x"]), 0)
    with pytest.raises(SelfCorrectError, match="unknown config key 'negative_ratio'"):
        build_config(InSeCConfig, {"negative_ratio": 0.5})



@pytest.mark.slow
def test_marker_tokens_survive_a_reload_for_the_sandbox_and_a_bpe_tokenizer(sandbox_dir, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from selfcorrect.methods.insec_data import add_tokens
    from selfcorrect.testing.tiny_hf import tiny_model_dir

    for name, source in (("sandbox", sandbox_dir), ("llama", tiny_model_dir("llama", tmp_path / "tiny"))):
        before = len(AutoTokenizer.from_pretrained(source))
        out = add_tokens(source, tmp_path / name, ["<fix>", "<why-state>"])
        tokenizer = AutoTokenizer.from_pretrained(out)
        model = AutoModelForCausalLM.from_pretrained(out)
        fix = tokenizer.convert_tokens_to_ids("<fix>")
        assert len(tokenizer) == before + 2 and model.get_input_embeddings().weight.shape[0] >= len(tokenizer)
        ids = tokenizer("12<fix><why-state>34", add_special_tokens=False)["input_ids"]
        assert ids.count(fix) == 1 and fix >= before
        # kept by the decoding every backend uses, so outputs can be read
        assert tokenizer.decode(ids, skip_special_tokens=True).replace(" ", "") == "12<fix><why-state>34"


def _gradient_at_mistake(model_dir, mistake_loss: str) -> tuple[float, float, list[int]]:
    """|d loss / d h| at the positions that predict the mistake tokens, and at the one that predicts the marker,
    through the exact trainer `finetune` builds. `h` is the final layer norm's output, which feeds only its own
    position's next-token logits (TRL fuses the LM head with its loss, so the logits themselves never exist)."""
    from selfcorrect.training.finetune import FinetuneConfig, build_trainer, load_model, tokenize_dataset

    model, tokenizer = load_model(model_dir)
    negative = negative_from(KIT, CHAIN, "11234741", "step", "on_policy")
    conversation = [{"role": "user", "content": "1234"},
                    {"role": "assistant", "content": negative.segments("<fix>", False, mistake_loss)}]
    weight = 1.0 if mistake_loss == "unlikelihood" else 0.0
    config = FinetuneConfig(unlikelihood_weight=weight, batch_size=1)
    records = tokenize_dataset(tokenizer, [conversation], "spans", keep_neg_mask=weight > 0)
    trainer = build_trainer(model, tokenizer, records, config, "/tmp/insec-grad-unused", quiet=True)
    batch = trainer.data_collator(records)
    kept = {}
    handle = model.transformer.ln_f.register_forward_hook(lambda _m, _i, out: kept.setdefault("h", out).retain_grad())
    try:
        trainer.compute_loss(model, batch).backward()
    finally:
        handle.remove()
    ids = batch["input_ids"][0].tolist()
    text = tokenizer.convert_ids_to_tokens(ids)
    marker = text.index("<fix>")
    mistake = [marker - 2, marker - 1]  # "47": the wrong digit and the state computed from it
    grad = kept["h"].grad[0].abs().sum(-1)
    return float(grad[[m - 1 for m in mistake]].sum()), float(grad[marker - 1]), [ids[m] for m in mistake]


@pytest.mark.slow
def test_no_loss_reaches_the_mistake_tokens_under_the_default_loss(sandbox_dir, tmp_path):
    from selfcorrect.methods.insec_data import add_tokens
    from selfcorrect.sandbox.tokenizer import token_id

    model_dir = add_tokens(sandbox_dir, tmp_path / "marked", ["<fix>"])
    at_mistake, at_marker, mistake_ids = _gradient_at_mistake(model_dir, "none")
    assert at_mistake == 0.0 and at_marker > 0.0  # the marker is learnt, the mistake is not
    assert mistake_ids == [token_id("4"), token_id("7")]  # the positions checked hold the mistake "47"
    for ablation in ("full", "unlikelihood"):
        assert _gradient_at_mistake(model_dir, ablation)[0] > 0.0


@pytest.mark.slow
def test_an_iteration_holds_one_engine_at_a_time_and_none_while_fine_tuning(sandbox_dir, tmp_path, monkeypatch):
    from engine_ledger import EngineLedger
    from selfcorrect.methods.insec import run_insec
    from selfcorrect.training.finetune import FinetuneConfig

    ledger = EngineLedger(monkeypatch)
    config = InSeCConfig(model=str(sandbox_dir), iterations=1, samples_per_question=2, eval_limit=4,
                         task_options={"n_digits": 4, "sizes": {"train": 8, "validation": 2, "test": 4}},
                         finetune=FinetuneConfig(batch_size=8, epochs=1, learning_rate=1e-3))
    run_insec(config, tmp_path / "run", quiet=True)
    m0, base, m1 = (str(p) for p in (sandbox_dir, tmp_path / "run" / "iter-0" / "model",
                                      tmp_path / "run" / "iter-1" / "model"))
    assert ledger.events == [("open", m0), ("close", m0),  # iteration 0's evaluation
                             ("open", base), ("close", base),  # iteration 1's on-policy samples
                             ("finetune", ""), ("open", m1), ("close", m1)]  # its training and evaluation


@pytest.mark.slow
def test_a_two_iteration_run_trains_equal_steps_and_resumes_without_recomputing(sandbox_dir, tmp_path, monkeypatch):
    from selfcorrect.methods.insec import run_insec
    from selfcorrect.training.finetune import FinetuneConfig

    config = InSeCConfig(model=str(sandbox_dir), iterations=2, samples_per_question=2, eval_limit=6,
                         task_options={"n_digits": 4, "sizes": {"train": 16, "validation": 2, "test": 6}},
                         finetune=FinetuneConfig(batch_size=8, epochs=1, learning_rate=1e-3))
    summary = run_insec(config, tmp_path / "on-policy", quiet=True)
    assert [row["iteration"] for row in summary["iterations"]] == [0, 1, 2]
    assert [row["training"]["steps"] for row in summary["iterations"][1:]] == [2, 2]  # 16 sequences / batch 8
    assert all(row["data"]["sequences"] == 16 for row in summary["iterations"][1:])
    samples = (tmp_path / "on-policy" / "iter-1" / "samples.jsonl").read_text().splitlines()
    assert len(samples) == 32  # 16 questions x 2 samples in one call
    evaluated = [json.loads(line) for line in (tmp_path / "on-policy/iter-2/eval.jsonl").read_text().splitlines()]
    assert len(evaluated) == 6 and all("insec" in t["metadata"] for t in evaluated)
    assert summary["final"]["n_examples"] == 6
    assert "<fix>" in (tmp_path / "on-policy" / "iter-0" / "model" / "tokenizer.json").read_text()

    def no_training(*_args, **_kwargs):
        raise AssertionError("a finished step was recomputed")

    monkeypatch.setattr(sys.modules["selfcorrect.training.finetune"], "finetune", no_training)
    monkeypatch.setattr(sys.modules["selfcorrect.methods.insec"], "answer", no_training)  # sampling and eval
    again = run_insec(config, tmp_path / "on-policy", resume=True, quiet=True)
    assert again["iterations"] == summary["iterations"]
    monkeypatch.undo()

    sft = run_insec(config.model_copy(update={"negatives": "none", "iterations": 1}), tmp_path / "sft", quiet=True)
    first = sft["iterations"][1]
    assert first["training"]["steps"] == 2 and first["data"]["negatives"] == 0
    assert not (tmp_path / "sft" / "iter-0" / "model").exists()  # the control trains the base as it is
    assert sft["iterations"][0]["eval"] == summary["iterations"][0]["eval"]  # the same base evaluation for every arm


def test_the_demo_runs_the_shipped_sandbox_config():
    from pathlib import Path

    from selfcorrect.config import load_config
    from selfcorrect.methods.insec_compare import demo_config

    shipped = load_config(InSeCConfig, Path(__file__).resolve().parents[1] / "configs" / "insec" / "sandbox.yaml")
    assert demo_config(seed=0) == shipped


def test_compare_table_and_plot_from_summaries(tmp_path):
    from selfcorrect.methods.insec_compare import aggregate, format_markdown, plot

    def summary(seed: int, accuracy: float, precision: float | None) -> dict:
        final = {key: {"value": 0.5, "ci": [0.4, 0.6]} for key in
                 ("first_attempt_accuracy", "marker_rate", "marker_recall", "i_to_c", "c_to_i")}
        final["accuracy"] = {"value": accuracy, "ci": [0, 1]}
        final["marker_precision"] = None if precision is None else {"value": precision, "ci": [0, 1]}
        return {"seed": seed, "final": final, "iterations": [{"eval": {"accuracy": {"value": 0.4}}},
                                                          {"training": {"steps": 10}, "data": {"negatives": 5}}]}

    table = aggregate({"insec-on-policy": [summary(0, 0.7, 0.9), summary(1, 0.8, 0.7)],
                       "sft": [summary(0, 0.6, None), summary(1, 0.6, None)]})
    row = table["rows"]["insec-on-policy"]
    assert row["accuracy"]["mean"] == pytest.approx(0.75) and row["accuracy"]["std"] == pytest.approx(np.std(
        [0.7, 0.8], ddof=1))
    assert row["steps"]["mean"] == 10 and table["rows"]["sft"]["marker_precision"] is None
    text = format_markdown(table)
    assert "| insec-on-policy | 0.400 ± 0.000 | 0.750 ± 0.071 |" in text and "| sft |" in text
    assert "| I->C | C->I | steps |" in text.splitlines()[0]
    plot(table, tmp_path / "compare.png")
    assert (tmp_path / "compare.png").read_bytes()[:4] == b"\x89PNG"
