"""STaSC runs and their equal-budget controls over seeds: the test scores at the iteration chosen on validation.

    python experiments/real_model/seeds.py RUN [RUN ...]      # e.g. runs/capitals/{stasc,star,gold}-seed*

For each finished `selfcorrect stasc` run folder: its method, seed, the iteration chosen on validation, the test
acc@t1 and acc@t2 there, and the wrong→right pairs each iteration kept. Then, per method, the mean and the sample
standard deviation over seeds, and the issue's goal read directly: STaSC's acc@t2 minus the acc@t1 of the STaR
control of the same seed, per seed and pooled, with a 95% bootstrap interval over test questions (each question's
difference averaged over the seeds, so the interval is paired; seed 0). Reads saved results only.
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path

import numpy as np

from selfcorrect.analysis.metrics import bootstrap_ci, correct_at
from selfcorrect.runs import read_trajectories


def test_correct(folder: Path, round_index: int) -> dict[str, float]:
    """Question id -> 1.0 if the answer at `round_index` is right, in a test evaluation folder."""
    return {t.example.id: float(correct_at(t, round_index)) for t in read_trajectories(folder / "samples.jsonl")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path)
    args = parser.parse_args()
    by_method: dict[str, dict[int, tuple[float, float]]] = defaultdict(dict)
    folders: dict[tuple[str, int], Path] = {}  # (method, seed) -> its test evaluation at the chosen iteration
    print("| method | seed | iteration chosen | test acc@t1 | test acc@t2 | kept pairs per iteration |")
    print("|---|---|---|---|---|---|")
    for run in args.runs:
        summary = json.loads((run / "summary.json").read_text())
        chosen = summary["selection"]
        scores = chosen["test_at_selected"]
        kept = [row["training"]["n_used"] if "training" in row else 0
                for row in summary["iterations"] if row["iteration"] > 0]
        by_method[summary["method"]][summary["seed"]] = (scores["acc@t1"], scores["acc@t2"])
        folders[summary["method"], summary["seed"]] = run / f"iter-{chosen['iteration']}" / "eval-test-T0"
        print(f"| {summary['method']} | {summary['seed']} | {chosen['iteration']} | {scores['acc@t1']:.3f} | "
              f"{scores['acc@t2']:.3f} | {', '.join(map(str, kept))} |")
    print("\n| method | seeds | test acc@t1, mean ± sd | test acc@t2, mean ± sd |\n|---|---|---|---|")
    for method, seeds in by_method.items():
        values = np.array(list(seeds.values()))
        sd = values.std(axis=0, ddof=1) if len(values) > 1 else np.zeros(2)
        print(f"| {method} | {len(values)} | {values[:, 0].mean():.3f} ± {sd[0]:.3f} | "
              f"{values[:, 1].mean():.3f} ± {sd[1]:.3f} |")
    shared = sorted(set(by_method.get("stasc", {})) & set(by_method.get("star", {})))
    if shared:
        gaps = [by_method["stasc"][seed][1] - by_method["star"][seed][0] for seed in shared]
        print(f"\nSTaSC acc@t2 - STaR acc@t1, per seed {shared}: " + ", ".join(f"{gap:+.3f}" for gap in gaps))
        per_seed = [(test_correct(folders["stasc", seed], 2), test_correct(folders["star", seed], 1))
                    for seed in shared]
        ids = sorted(per_seed[0][0])
        differences = np.array([np.mean([stasc[i] - star[i] for stasc, star in per_seed]) for i in ids])
        low, high = bootstrap_ci(differences, seed=0)
        print(f"pooled over the seeds, paired over {len(ids)} test questions: {differences.mean():+.3f} "
              f"[{low:+.3f}, {high:+.3f}]")


if __name__ == "__main__":
    main()
