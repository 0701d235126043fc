"""How the answers of saved runs are scored, and what form they take: in-accuracy against exact match, and length.

    python experiments/real_model/answer_forms.py [--names "A,B"] FILE.jsonl [FILE.jsonl ...]

NQ-open's reward (in-accuracy, STaSC's) counts an answer right when a gold alias appears anywhere in it, so a
model that answers in sentences has more chances than one that answers in a few words. Fine-tuning on NQ's short
gold answers changes exactly that form. For each file of trajectories (an eval run's samples.jsonl, an InSeC
iteration's eval.jsonl), per round: in-accuracy (the run's own verdicts), exact match (the whole answer equals an
alias after SQuAD normalisation, `rewards.exact_match`) and the mean number of words, each with its 95% percentile
bootstrap interval over questions (seed 0). `--names` also counts the answers that name any of the given strings
(case-insensitive): e.g. the entities of a prompt's few-shot examples, which a small model copies.
"""

from __future__ import annotations

import argparse

import numpy as np

from selfcorrect.analysis.metrics import bootstrap_ci
from selfcorrect.rewards import exact_match
from selfcorrect.runs import read_trajectories


def _cell(values: list[float]) -> str:
    low, high = bootstrap_ci(np.asarray(values, dtype=float), seed=0)
    return f"{np.mean(values):.3f} [{low:.3f}, {high:.3f}]"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("files", nargs="+")
    parser.add_argument("--names", default="", help="comma-separated strings whose mentions are counted")
    args = parser.parse_args()
    names = [n.strip().lower() for n in args.names.split(",") if n.strip()]
    print("| file | round | n | in-accuracy | exact match | mean words |" + " naming --names |" * bool(names))
    print("|---|---|---|---|---|---|" + "---|" * bool(names))
    for path in args.files:
        trajectories = read_trajectories(path)
        rounds = max(len(t.model_turns()) for t in trajectories)
        for index in range(rounds):
            turns = [(t.example, t.model_turns()[index]) for t in trajectories if len(t.model_turns()) > index]
            scored = [float(turn.verdict.score >= 1.0) for _, turn in turns]
            exact = [exact_match(example, turn.text).score for example, turn in turns]
            words = [float(len(turn.text.split())) for _, turn in turns]
            naming = sum(any(n in turn.text.lower() for n in names) for _, turn in turns)
            print(f"| {path} | {index + 1} | {len(turns)} | {_cell(scored)} | {_cell(exact)} | "
                  f"{np.mean(words):.1f} |" + f" {naming} |" * bool(names))


if __name__ == "__main__":
    main()
