"""Do two `eval` run folders hold the same results? E.g. a run killed and resumed against an uninterrupted one.

    python experiments/compare_runs.py RUN_A RUN_B

Compares, per trajectory id, every turn and the metadata (extra samples included); the `metrics`, `convergence` and
`uncertainty.by_round` blocks of summary.json (timings may differ); and the stored hidden states, bit for bit.
Exits 1 and names the first difference if anything differs.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

from selfcorrect.analysis.probes import HIDDEN_DIR, load_hidden
from selfcorrect.runs import RunFolder

BLOCKS = (("metrics",), ("convergence",), ("uncertainty", "by_round"))


def trajectories(run: Path) -> dict[str, dict]:
    rows = (json.loads(line) for line in (run / "samples.jsonl").read_text().splitlines() if line.strip())
    return {row["id"]: {"turns": row["turns"], "metadata": row["metadata"]} for row in rows}


def block(summary: dict, path: tuple[str, ...]) -> object:
    for key in path:
        summary = summary.get(key, {})
    return summary


def differences(ta: dict[str, dict], tb: dict[str, dict], a: Path, b: Path) -> list[str]:
    found = []
    if set(ta) != set(tb):
        found.append(f"trajectory ids differ: {len(set(ta) ^ set(tb))} in one run only")
    found += [f"trajectory {i} differs" for i in sorted(set(ta) & set(tb)) if ta[i] != tb[i]][:1]
    sa, sb = (RunFolder(run).read_summary() for run in (a, b))
    found += [f"summary block {'.'.join(path)} differs" for path in BLOCKS if block(sa, path) != block(sb, path)]
    if (a / HIDDEN_DIR).is_dir() or (b / HIDDEN_DIR).is_dir():
        (la, ha), (lb, hb) = load_hidden(a), load_hidden(b)
        same = la == lb and ha.keys() == hb.keys() and all(
            ha[r].keys() == hb[r].keys() and all(np.array_equal(ha[r][i], hb[r][i]) for i in ha[r]) for r in ha)
        if not same:
            found.append("hidden states differ")
    return found


def main(a: str, b: str) -> int:
    ta, tb = trajectories(Path(a)), trajectories(Path(b))
    found = differences(ta, tb, Path(a), Path(b))
    blocks = ", ".join(".".join(path) for path in BLOCKS)
    same = f"identical ({len(ta)} trajectories, summary blocks {blocks}, hidden states)"
    print(f"{a} vs {b}: " + ("; ".join(found) if found else same))
    return 1 if found else 0


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    sys.exit(main(sys.argv[1], sys.argv[2]))
