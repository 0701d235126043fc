"""Markdown tables of an icalign sweep's results.json: every model at clean rewards, and the base model by noise.

    python experiments/icalign_tables.py runs/icalign-cpu/sweep/results.json

Values are 1 − cos(ŷ, xW*) of the transformer (TF) at a few numbers of in-context examples: mean over seeds with the
95% t-interval over seeds in brackets; the last column is the mean over n = 2..15 (a single number per model for the
comparisons of the six-panel figure).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

SHOW = (2, 8, 15)


def cell(curve: dict, n: int) -> str:
    return f"{curve['mean'][n]:.3f} [{curve['lo'][n]:.3f}, {curve['hi'][n]:.3f}]"


def average(curve: dict, key: str = "mean") -> float:
    values = curve[key][2:16]
    return sum(values) / len(values)


def main(path: str) -> None:
    results = json.loads(Path(path).read_text())
    runs = results["runs"]
    print(f"seeds {results['seeds']}; preset {results['preset']}\n")
    print("| panel | model | " + " | ".join(f"n = {n}" for n in SHOW) + " | mean n = 2..15 [interval] |")
    print("|---|---|" + "---|" * (len(SHOW) + 1))
    for panel, entries in results["panels"].items():
        if panel == "noise":
            continue
        for label, name in entries:
            tf = runs[name]["curves"]["0"]["tf"]
            print(f"| {panel} | {label} | " + " | ".join(cell(tf, n) for n in SHOW)
                  + f" | {average(tf):.3f} [{average(tf, 'lo'):.3f}, {average(tf, 'hi'):.3f}] |")
    base = runs[results["base"]]["curves"]
    print("\n| noise p | TF " + " | TF ".join(f"n = {n}" for n in SHOW) + " | GD n = 15 |")
    print("|---|" + "---|" * (len(SHOW) + 1))
    for p, curves in base.items():
        print(f"| {p} | " + " | ".join(cell(curves["tf"], n) for n in SHOW) + f" | {curves['gd']['mean'][15]:.3f} |")


if __name__ == "__main__":
    main(sys.argv[1])
