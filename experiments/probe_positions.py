"""Does the sandbox model know, step by step, where its previous answer goes wrong? Behaviour against linear probes.

    python experiments/probe_positions.py RUN_DIR [--model sandbox] [--out result.json]

RUN_DIR is an `eval` run on the sandbox task (e.g. `runs/inference/sandbox-train-5r`); every well-formed answer it
holds (all rounds) becomes an attempt. The script feeds the model `<bos>Q q A attempt <eos> C attempt`: a
correction that copies the attempt, teacher-forced. At the correction position that predicts step i's state the
model has just copied a correct prefix and must decide whether to copy the attempt's step i or write something
else, so only steps up to the attempt's first error are kept, labelled 1 at the first error.

Readouts of the same positions, evaluated on the held-out half of the questions:
- behaviour: −log p(copying the attempt's step), a readout that needs to know which token the attempt wrote;
- a linear probe per layer (logistic regression on the hidden state, trained on the other half), which does not;
- a linear probe given the written digit: one direction per digit the attempt wrote at that step (the state times
  the digit's one-hot), i.e. a probe allowed what the behavioural readout uses.
Wrong steps sit late in a trace, so pooled AUROCs mix "late" with "wrong": each readout is also scored within each
step position (the mean of the per-position AUROCs), and a probe on the position alone shows the confound's size.
The answer-level column asks the question of `selfcorrect probe`, "is this answer wrong?", scoring an attempt by its
highest step score over all steps (a right attempt has no first error; a wrong one is copied past it). Intervals are
95% bootstraps over held-out questions.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

import numpy as np

from selfcorrect.analysis.metrics import grouped_bootstrap_ci
from selfcorrect.analysis.probes import auroc, fit_probe
from selfcorrect.runs import RunFolder, write_json
from selfcorrect.tasks.sandbox_chain import first_error


def attempts_of(run_dir: str) -> tuple[list[str], list[str]]:
    """(question, answer) for every well-formed answer of every round of the run."""
    questions, answers = [], []
    for traj in RunFolder(Path(run_dir)).read_samples():
        question = traj.example.fields["question"]
        for turn in traj.model_turns():
            if len(turn.text) == 2 * len(question) and turn.text.isdigit():
                questions.append(question)
                answers.append(turn.text)
    return questions, answers


def forward(model_dir: str, questions: list[str], answers: list[str], batch: int = 512) -> tuple[list, np.ndarray]:
    """Hidden states of every layer (list of (rows, positions, d)) and log-probabilities (rows, positions, vocab)."""
    import torch
    from transformers import AutoModelForCausalLM

    from selfcorrect.sandbox.data import correction_batch, sequence_length

    model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    ids, _ = correction_batch(questions, answers, answers, sequence_length(len(questions[0])))
    states, logprobs = [], []
    with torch.no_grad():
        for start in range(0, len(ids), batch):
            out = model(torch.as_tensor(ids[start:start + batch]), output_hidden_states=True)
            states.append([h.numpy() for h in out.hidden_states])
            logprobs.append(torch.log_softmax(out.logits, -1).numpy())
    return [np.concatenate(layer) for layer in zip(*states, strict=True)], np.concatenate(logprobs)


def stratified(scores: np.ndarray, labels: np.ndarray, keep: np.ndarray) -> float:
    """Mean over step positions of the AUROC within that position (positions with both labels at least 10 times)."""
    values = [auroc(scores[keep[:, i], i], labels[keep[:, i], i]) for i in range(labels.shape[1])
              if labels[keep[:, i], i].sum() >= 10 and (~labels[keep[:, i], i]).sum() >= 10]
    return float(np.mean(values))


def scored(scores: np.ndarray, labels: np.ndarray, keep: np.ndarray, wrong: np.ndarray, test: np.ndarray,
           questions: list[str], seed: int) -> dict:
    """Pooled, position-stratified and answer-level AUROC on the test attempts, each with a bootstrap interval that
    resamples held-out questions (all attempts at one question together)."""
    test_rows = np.flatnonzero(test)
    test_questions = [questions[i] for i in test_rows]
    result = {}
    for name, stat in (("pooled", lambda r: auroc(scores[r][keep[r]], labels[r][keep[r]])),
                       ("within_position", lambda r: stratified(scores[r], labels[r], keep[r])),
                       ("answer", lambda r: auroc(scores[r].max(axis=1), wrong[r]))):
        lo, hi = grouped_bootstrap_ci(test_questions, lambda drawn, stat=stat: stat(test_rows[drawn]), n_boot=300,
                                      seed=seed)
        result[name] = {"value": stat(test_rows), "ci": [lo, hi]}
    return result


def probe_scores(features: np.ndarray, labels: np.ndarray, keep: np.ndarray, train: np.ndarray) -> np.ndarray:
    fit = keep & train[:, None]
    probe = fit_probe(features[fit], labels[fit], l2=1e-3)
    return probe.score(features.reshape(-1, features.shape[-1])).reshape(labels.shape)


def main(run_dir: str, model: str, out: str | None, seed: int) -> dict:
    from selfcorrect.models import resolve_model
    from selfcorrect.sandbox.data import DIGIT0

    questions, answers = attempts_of(run_dir)
    n_steps = len(questions[0])
    firsts = np.array([n_steps if f is None else f for f in map(first_error, questions, answers)])
    steps = np.arange(n_steps)[None, :]
    keep, labels = steps <= firsts[:, None], steps == firsts[:, None]
    order = np.random.default_rng(seed).permutation(sorted(set(questions)))
    train_questions = set(order[: len(order) // 2].tolist())
    train = np.array([q in train_questions for q in questions])
    states, logprobs = forward(str(resolve_model(model)), questions, answers)
    # correction layout: <bos> Q q A y1 <eos> C y2; the position holding y2's digit d_i predicts y2's state p_i
    predicts_state = 2 + n_steps + 1 + 2 * n_steps + 2 + 2 * np.arange(n_steps)
    attempt_states = np.array([[int(c) for c in a[1::2]] for a in answers])
    copy_logprob = np.take_along_axis(logprobs[:, predicts_state], DIGIT0 + attempt_states[..., None], -1)[..., 0]
    position = np.broadcast_to(np.eye(n_steps), (len(answers), n_steps, n_steps))
    test = ~train
    readouts: dict[str, Callable[[], np.ndarray]] = {
        "behaviour: -log p(copy the attempt's step)": lambda: -copy_logprob,
        "linear probe on the step position alone": lambda: probe_scores(position, labels, keep, train)}
    written = np.eye(10)[attempt_states]  # (attempts, steps, 10): the digit the attempt wrote at each step
    for layer, hidden in enumerate(states):
        at = hidden[:, predicts_state]
        readouts[f"linear probe, layer {layer}"] = lambda at=at: probe_scores(at, labels, keep, train)
        readouts[f"linear probe given the written digit, layer {layer}"] = (
            lambda at=at: probe_scores((at[..., None, :] * written[..., None]).reshape(*at.shape[:2], -1), labels,
                                       keep, train))
    result = {"run": run_dir, "model": model, "seed": seed, "n_attempts": len(answers),
              "n_test_steps": int((keep & test[:, None]).sum()),
              "n_test_first_errors": int((labels & keep & test[:, None]).sum()),
              "readouts": {name: scored(make(), labels, keep, firsts < n_steps, test, questions, seed)
                           for name, make in readouts.items()}}
    print(f"{result['n_attempts']} attempts; held out: {result['n_test_steps']} steps, "
          f"{result['n_test_first_errors']} first errors\n")
    print("| readout | first wrong step: pooled AUROC [95% CI] | within position | answer is wrong (max over steps) |"
          "\n|---|---|---|---|")
    for name, r in result["readouts"].items():
        cells = [f"{r[k]['value']:.3f} [{r[k]['ci'][0]:.3f}, {r[k]['ci'][1]:.3f}]"
                 for k in ("pooled", "within_position", "answer")]
        print(f"| {name} | " + " | ".join(cells) + " |")
    if out:
        write_json(Path(out), result)
    return result


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir")
    parser.add_argument("--model", default="sandbox")
    parser.add_argument("--out")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    main(args.run_dir, args.model, args.out, args.seed)
