"""What one STaSC iteration costs on a real model, read from a finished run folder's own timings.

    python benchmarks/stasc_iteration_real.py RUN [--out benchmarks/results/stasc_iteration_real.json]

RUN is a finished `selfcorrect stasc` folder, e.g. the one `experiments/real_model/training.sh OUT stasc` makes
(SmolLM2-135M-Instruct, NQ-open, configs/stasc/smollm2-nq.yaml). Per iteration: the seconds spent sampling
(answers and corrections, `iter-n/generation_s`), fine-tuning (`finetune.json`, absent when nothing was kept) and
evaluating (each `eval-*` run's generation time), and `seconds`, their sum; beside them the sizes that decide the
cost (training questions, N_init, N_corr, new-token cap, evaluation questions). Nothing is re-run: the numbers are
the run's, on the machine it ran on.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from selfcorrect.runs import RunFolder, read_saved_config


def iteration_costs(run: Path) -> dict[str, Any]:
    summary = RunFolder(run).read_summary()
    config = read_saved_config(run)
    timings = summary.get("timings", {})
    rows = []
    for row in summary["iterations"]:
        n = row["iteration"]
        evals = [RunFolder(folder).read_summary()["timings"]["generation_s"]
                 for folder in sorted((run / f"iter-{n}").glob("eval-*")) if (folder / "summary.json").is_file()]
        tuned = run / f"iter-{n}" / "model" / "finetune.json"
        parts = {"sampling": timings.get(f"iter-{n}/generation_s", 0.0),
                 "fine_tuning": json.loads(tuned.read_text())["seconds"] if tuned.is_file() else 0.0,
                 "evaluation": sum(evals, 0.0)}
        rows.append({"iteration": n, **{k: round(v, 1) for k, v in parts.items()},
                     "seconds": round(sum(parts.values()), 1), "kept": (row.get("selection") or {}).get("n_kept")})
    return {"run": str(run), "model": config.get("model"), "task": config.get("task"),
            "train_questions": config.get("train_limit"), "n_init": config.get("n_init"),
            "n_corr": config.get("n_corr"), "max_new_tokens": config.get("max_new_tokens"),
            "eval_questions_per_split": config.get("eval_limit"), "eval_splits": config.get("eval_splits"),
            "environment": summary.get("environment"), "iterations": rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path)
    parser.add_argument("--out", default="benchmarks/results/stasc_iteration_real.json")
    args = parser.parse_args()
    result = iteration_costs(args.run)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result["iterations"], indent=2))


if __name__ == "__main__":
    main()
