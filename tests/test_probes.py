"""Latent-concept probes: AUROC by hand, the probe's optimality condition, hidden-state storage, concept labels,
and (slow) hidden states stored by a real hf run equal those of a fresh request for the same conversation."""

from __future__ import annotations

import math

import numpy as np
import pytest

from selfcorrect.analysis.probes import (
    HiddenStore,
    ProbeConfig,
    auroc,
    concept_rows,
    fit_probe,
    load_hidden,
    probe_run,
)
from selfcorrect.cli import main
from selfcorrect.errors import SelfCorrectError
from selfcorrect.runs import RunFolder
from selfcorrect.trajectory import Example, LogprobSummary, Trajectory, Turn, Verdict


def test_auroc_by_hand():
    # positives 0.35, 0.8 against negatives 0.1, 0.4: 3 of 4 pairs ordered
    assert auroc([0.1, 0.4, 0.35, 0.8], [0, 0, 1, 1]) == 0.75
    # ties count one half: (0.5 vs 0.5) x 2 = 1, 0.9 beats both = 2 -> 3/4
    assert auroc([0.5, 0.5, 0.5, 0.9], [0, 1, 0, 1]) == 0.75
    assert auroc([1, 2, 3], [1, 1, 0]) == 0.0
    assert math.isnan(auroc([1, 2], [1, 1]))


def test_probe_satisfies_its_first_order_condition():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(60, 3)) * [1.0, 5.0, 0.2] + [0.0, 3.0, -1.0]
    y = (x[:, 0] + 0.2 * x[:, 1] + rng.normal(size=60) > 0.5).astype(float)
    l2 = 0.05
    probe = fit_probe(x, y, l2=l2, steps=5000)
    mean, scale = x.mean(0), x.std(0)
    z = (x - mean) / scale
    w_std = probe.weights * scale
    p = probe.score(x)
    grad_w = z.T @ (p - y) / len(y) + l2 * w_std
    grad_b = float(np.mean(p - y))
    assert np.abs(grad_w).max() < 1e-6 and abs(grad_b) < 1e-6
    assert np.allclose(p, 1 / (1 + np.exp(-(z @ w_std + probe.bias + probe.weights @ mean))))


def test_probe_on_symmetric_data_has_no_bias_and_separates():
    x = np.array([[-2.0], [-1.0], [1.0], [2.0]])
    probe = fit_probe(x, np.array([0, 0, 1, 1]), l2=0.1)
    assert abs(probe.bias) < 1e-9 and probe.weights[0] > 0
    assert auroc(probe.score(x), [0, 0, 1, 1]) == 1.0
    assert probe.cosine(np.array([[3.0], [-0.5]])).tolist() == pytest.approx([1.0, -1.0])
    with pytest.raises(SelfCorrectError, match="same label"):
        fit_probe(x, np.ones(4))


def _traj(tid: str, correct: list[bool]) -> Trajectory:
    traj = Trajectory(id=tid, example=Example(id=tid, fields={}))
    for i, ok in enumerate(correct):
        traj.add(Turn(role="user", kind="prompt", round=i + 1, text="?"))
        traj.add(Turn(role="assistant", kind="answer" if i == 0 else "correction", round=i + 1, text="x",
                      verdict=Verdict(float(ok)), logprobs=LogprobSummary(n_tokens=1, sum_logprob=-(i + 1.0))))
    return traj


def test_hidden_store_round_trip_and_concept_labels(tmp_path):
    first, second = HiddenStore(-1), HiddenStore(-1)
    for r in (1, 2, 3):
        first.add("a", r, {-1: [r, 0.0]})
        second.add("b", r, {-1: [0.0, r]})
    first.save(tmp_path, 0)
    second.save(tmp_path, 1)
    layer, hidden = load_hidden(tmp_path)
    assert layer == -1 and sorted(hidden) == [1, 2, 3]
    assert hidden[2]["a"].tolist() == [2.0, 0.0] and hidden[3]["b"].tolist() == [0.0, 3.0]
    rows = concept_rows([_traj("a", [False, True, True]), _traj("b", [True, False, False])], hidden)
    # round 1 has no answer in context (-1); round t is labelled by whether the round t-1 answer was wrong
    assert rows.labels.tolist() == [-1, 1, 0, -1, 0, 1]
    assert rows.rounds.tolist() == [1, 2, 3, 1, 2, 3] and rows.nll.tolist() == [1.0, 2.0, 3.0] * 2
    assert np.array_equal(rows.context_nll, [np.nan, 1.0, 2.0] * 2, equal_nan=True)  # NLL of the answer in context
    assert rows.question_features.tolist() == [[1.0, 0.0]] * 3 + [[0.0, 1.0]] * 3  # each row's round-1 state
    with pytest.raises(SelfCorrectError, match="no hidden states"):
        load_hidden(tmp_path / "elsewhere")


def _bbq_traj(tid: str, polarity: str, letters: list[str | None]) -> Trajectory:
    """A BBQ-like trajectory: option (a) names the stereotyped group, (c) is "unknown"."""
    meta = {"target_index": 0, "unknown_index": 2, "question_polarity": polarity}
    traj = Trajectory(id=tid, example=Example(id=tid, fields={}, gold=2, metadata=meta))
    for i, letter in enumerate(letters):
        traj.add(Turn(role="user", kind="prompt", round=i + 1, text="?"))
        traj.add(Turn(role="assistant", kind="answer" if i == 0 else "correction", round=i + 1, text="x",
                      extracted=letter, verdict=Verdict(float(letter == "c"), extracted=letter)))
    return traj


def test_stereotype_concept_labels_follow_the_bias_rule_and_skip_unknown_answers():
    """Negative question: picking the target (a) is stereotyped; non-negative: picking the other person (b) is.
    An "unknown" (c) or unreadable answer in context leaves the row unlabelled (-1), as the bias score does."""
    hidden = {r: {"neg": np.zeros(2), "nonneg": np.ones(2)} for r in (1, 2, 3, 4)}
    trajectories = [_bbq_traj("neg", "neg", ["a", "b", "c", "a"]),
                    _bbq_traj("nonneg", "nonneg", ["a", "b", None, "c"])]
    rows = concept_rows(trajectories, hidden, "answer-in-context-is-stereotyped")
    assert rows.labels.tolist() == [-1, 1, 0, -1, -1, 0, 1, -1]
    wrong = concept_rows(trajectories, hidden)  # the default concept on the same rows: the answer was not (c)
    assert wrong.labels.tolist() == [-1, 1, 1, 0, -1, 1, 1, 1]


def _synthetic_run(path, n: int, seed: int, signal: float, by_question: bool = False) -> None:
    """A run folder whose stored states are `signal` x (answer in context wrong) along one axis, plus noise. With
    `by_question`, a question is hard (every answer wrong) or easy (every answer right) and every state, the
    question-only round 1 included, carries `signal` x hard: difficulty, not a read of the answer."""
    rng = np.random.default_rng(seed)
    run = RunFolder.open(path, {"synthetic": True})
    store = HiddenStore(-1)
    trajectories = []
    for i in range(n):
        hard = bool(rng.random() < 0.5)
        correct = [not hard] * 3 if by_question else [bool(rng.random() < 0.5) for _ in range(3)]
        traj = _traj(f"{seed}-{i}", correct)
        trajectories.append(traj)
        for r in (1, 2, 3):
            wrong_before = hard if by_question else r > 1 and not correct[r - 2]
            state = rng.normal(size=4) + np.array([signal * wrong_before, 0.0, 0.0, 0.0])
            store.add(traj.id, r, {-1: state.tolist()})
    run.append(trajectories)
    store.save(path, 0)


def test_probe_run_reports_held_out_auroc_with_an_interval(tmp_path):
    _synthetic_run(tmp_path / "run", n=200, seed=1, signal=3.0)
    result = probe_run(tmp_path / "run", config=ProbeConfig(n_boot=200))
    auc = result["held_out_auroc"]
    assert auc["n_examples"] == 100 and auc["n_rows"] == 200  # half the examples, rounds 2 and 3 each
    assert 0.9 < auc["value"] < 1.0 and auc["ci"][0] <= auc["value"] <= auc["ci"][1]
    assert [r["round"] for r in result["activation_by_round"]] == [1, 2, 3]
    assert (tmp_path / "run" / "probe.json").is_file() and (tmp_path / "run" / "probe.npz").is_file()
    assert result["nll_baseline_auroc"]["n_rows"] == 200  # the NLL-only baseline scores the same held-out rows
    control = result["question_only_auroc"]  # round-1 states carry no signal here: the control is at chance
    assert control["n_rows"] == 200 and control["ci"][0] < 0.5 < control["ci"][1]
    gap = control["probe_minus_control"]  # the probe reads the answer: far above the control, interval above 0
    assert gap["value"] == pytest.approx(auc["value"] - control["value"]) and gap["ci"][0] > 0.3
    _synthetic_run(tmp_path / "noise", n=200, seed=2, signal=0.0)
    chance = probe_run(tmp_path / "noise", train_dir=tmp_path / "run", config=ProbeConfig(n_boot=200))
    lo, hi = chance["held_out_auroc"]["ci"]
    assert lo < 0.5 < hi and chance["trained_on"] == str(tmp_path / "run")


def test_question_only_control_matches_a_probe_that_reads_difficulty(tmp_path):
    _synthetic_run(tmp_path / "run", n=200, seed=3, signal=3.0, by_question=True)
    result = probe_run(tmp_path / "run", config=ProbeConfig(n_boot=200))
    assert result["held_out_auroc"]["value"] > 0.9
    assert result["question_only_auroc"]["value"] > 0.9  # the question alone tells as much: no answer is read
    gap = result["question_only_auroc"]["probe_minus_control"]
    assert gap["ci"][0] < 0 < gap["ci"][1]  # the probe beats the question alone by nothing resolvable


def test_probe_command_needs_hidden_states(tmp_path, capsys):
    RunFolder.open(tmp_path / "run", {"x": 1})
    assert main(["probe", str(tmp_path / "run")]) == 2
    assert "has no hidden states" in capsys.readouterr().err


@pytest.mark.slow
def test_hf_run_stores_the_state_a_fresh_request_sees_and_resumes(tmp_path):
    import torch

    from selfcorrect.backends.base import GenerationRequest, SamplingParams
    from selfcorrect.backends.hf import HFBackend
    from selfcorrect.methods.evaluate import EvalConfig, run_eval
    from selfcorrect.testing.tiny_hf import tiny_model_dir

    torch.set_num_threads(1)
    backend = HFBackend(str(tiny_model_dir("llama", tmp_path / "models")))
    config = EvalConfig(task="sandbox-chain", task_options={"n_digits": 4, "sizes": {"test": 6}}, rounds=2,
                        temperature=1.0, max_new_tokens=6, hidden_layer=-1, chunk_size=3, seed=3)
    run_eval(config, tmp_path / "run", quiet=True, backend=backend)
    layer, hidden = load_hidden(tmp_path / "run")
    assert layer == -1 and sorted(hidden) == [1, 2, 3] and len(hidden[2]) == 6
    traj = RunFolder(tmp_path / "run").read_samples()[4]
    before_round_2 = traj.messages()[:3]  # question, first answer, review instruction
    fresh = backend.generate([GenerationRequest(SamplingParams(), messages=before_round_2, hidden_layers=(-1,))])
    assert np.allclose(hidden[2][traj.id], fresh[0].hidden_states[-1], atol=1e-5)

    (tmp_path / "run" / "hidden" / "round-2.chunk-1.npz").unlink()  # as if killed before the chunk was written
    lines = (tmp_path / "run" / "samples.jsonl").read_text().splitlines(keepends=True)
    (tmp_path / "run" / "samples.jsonl").write_text("".join(lines[:4]))
    run_eval(config, tmp_path / "run", resume=True, quiet=True, backend=backend)
    _, resumed = load_hidden(tmp_path / "run")
    assert all(np.array_equal(resumed[r][i], hidden[r][i]) for r in hidden for i in hidden[r])
