"""Is one probe better than another on the same answers? A paired bootstrap of the AUROC difference.

    python experiments/probe_paired.py RUN_A RUN_B [--seed 0] [--n-boot 1000]

RUN_A and RUN_B are `eval` runs of the same model, questions and seed that stored different hidden states (e.g. the
last layer and layer 0, the control), each already probed with `selfcorrect probe` (which wrote `probe.npz`). The
answers are identical, so the probes score the same rows; resampling the questions once for both gives an interval
for AUROC(A) − AUROC(B) that accounts for their correlation, which two separate intervals do not.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from selfcorrect.analysis.metrics import grouped_bootstrap_ci
from selfcorrect.analysis.probes import LinearProbe, auroc, concept_rows, load_hidden
from selfcorrect.runs import RunFolder


def held_out_scores(run_dir: str) -> tuple[list[str], np.ndarray, np.ndarray]:
    """(example ids, probe scores, labels) of the run's labelled rows, ordered by (example, round)."""
    _, hidden = load_hidden(run_dir)
    rows = concept_rows(RunFolder(Path(run_dir)).read_samples(), hidden)
    with np.load(Path(run_dir) / "probe.npz") as saved:
        probe = LinearProbe(weights=saved["weights"], bias=float(saved["bias"]))
    keep = rows.labels >= 0
    order = sorted(np.flatnonzero(keep), key=lambda i: (rows.example_ids[i], int(rows.rounds[i])))
    return [rows.example_ids[i] for i in order], probe.score(rows.features[order]), rows.labels[order]


def main(run_a: str, run_b: str, seed: int, n_boot: int) -> None:
    ids_a, scores_a, labels_a = held_out_scores(run_a)
    ids_b, scores_b, labels_b = held_out_scores(run_b)
    if ids_a != ids_b or not np.array_equal(labels_a, labels_b):
        raise SystemExit("the runs do not hold the same answers: pair runs of one model, question set and seed")
    def difference(rows: np.ndarray) -> float:
        return auroc(scores_a[rows], labels_a[rows]) - auroc(scores_b[rows], labels_a[rows])

    lo, hi = grouped_bootstrap_ci(ids_a, difference, n_boot=n_boot, seed=seed)
    print(f"AUROC {run_a}: {auroc(scores_a, labels_a):.3f}; {run_b}: {auroc(scores_b, labels_b):.3f}; "
          f"difference {difference(np.arange(len(labels_a))):+.3f} [{lo:+.3f}, {hi:+.3f}] (95% paired bootstrap "
          f"over {len(set(ids_a))} questions, {len(labels_a)} rows)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_a")
    parser.add_argument("run_b")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--n-boot", type=int, default=1000)
    args = parser.parse_args()
    main(args.run_a, args.run_b, args.seed, args.n_boot)
