"""Per-round tables of finished `selfcorrect eval` runs, as the markdown of docs/real-model.md.

    python experiments/real_model/table.py RUN [RUN ...]

For each run: accuracy by round with its 95% interval, the flips into each round (shares of examples), mean token
entropy and mean NLL of the answer, ECE of the option confidence where the task has options, how many answers
copy the previous one word for word and how many the reward could read nothing from (no option, no number), and
for BBQ the accuracy and bias score per context condition. Everything is read from the run folders (summary.json
and samples.jsonl).
"""

from __future__ import annotations

import sys
from pathlib import Path

from selfcorrect.runs import RunFolder


def _num(value: float | None, signed: bool = False) -> str:
    return "–" if value is None else (f"{value:+.3f}" if signed else f"{value:.3f}")


def _ci(estimate: dict) -> str:
    return f"{estimate['value']:.3f} [{estimate['ci'][0]:.3f}, {estimate['ci'][1]:.3f}]"


def _answer_counts(run: RunFolder) -> dict[int, tuple[int, int]]:
    """Round -> (answers identical to the previous round's, answers with nothing extracted)."""
    counts: dict[int, list[int]] = {}
    for trajectory in run.read_samples():
        answers = trajectory.model_turns()
        for t, turn in enumerate(answers, 1):
            row = counts.setdefault(t, [0, 0])
            row[0] += t > 1 and turn.text == answers[t - 2].text
            row[1] += turn.extracted is None
    return {t: (repeats, unread) for t, (repeats, unread) in counts.items()}


def _verdicts(run: RunFolder) -> dict[bool, dict[str | None, int]]:
    """First answer right or wrong -> how often the first check called it bad, good, or said nothing parseable."""
    counts: dict[bool, dict[str | None, int]] = {}
    for trajectory in run.read_samples():
        check = next((turn for turn in trajectory.turns if turn.kind == "check"), None)
        if check is None or check.verdict is None:
            continue
        row = counts.setdefault(bool(trajectory.model_turns()[0].verdict.correct), {})
        row[check.verdict.extracted] = row.get(check.verdict.extracted, 0) + 1
    return counts


def run_table(run: Path) -> str:
    folder = RunFolder(run)
    summary = folder.read_summary()
    answers = _answer_counts(folder)
    metrics = summary["metrics"]
    flips = {b["to"]: b for b in metrics["transitions"]}
    unc = {r["round"]: r for r in summary["uncertainty"]["by_round"]}
    backend = summary["backend"]
    lines = [f"**{run.name}**: {summary['task']['name']}, {metrics['n_examples']} questions, method "
             f"{summary['method']}, seed {summary['seed']}, {backend.get('dtype', '')} on "
             f"{backend.get('device', 'cpu')}, generation {summary['timings']['generation_s'] / 60:.1f} min", "",
             "| round | accuracy [95% CI] | I->C | C->I | token entropy | mean NLL | ECE | copies | unread |",
             "|---|---|---|---|---|---|---|---|---|"]
    for row in metrics["accuracy_by_round"]:
        t, u, f = row["round"], unc.get(row["round"], {}), flips.get(row["round"], {})
        lines.append(f"| {t} | {_ci(row)} | {_num(f.get('i_to_c'))} | {_num(f.get('c_to_i'))} | "
                     f"{_num(u.get('mean_entropy'))} | {_num(u.get('mean_nll'))} | "
                     f"{_num((u.get('option') or {}).get('ece'))} | {answers[t][0] if t > 1 else '–'} | "
                     f"{answers[t][1]} |")
    checks = summary.get("checks")
    if checks:
        gain = checks["gain"]
        lines += ["", f"checks ({checks['source']}, critic noise {checks['critic_noise']}): accuracy "
                      f"{_num(checks['accuracy'])}, parsed {_num(checks['parse_rate'])}; gain acc@t{gain['to_round']}"
                      f" - acc@t1 {gain['value']:+.3f} [{gain['ci'][0]:+.3f}, {gain['ci'][1]:+.3f}]",
                  "", "| first answer | check says bad | check says good | nothing parsed |", "|---|---|---|---|"]
        for right, counts in sorted(_verdicts(folder).items(), reverse=True):
            lines.append(f"| {'right' if right else 'wrong'} | {counts.get('bad', 0)} | {counts.get('good', 0)} | "
                         f"{counts.get(None, 0)} |")
    application = summary.get("application") or {}
    if application.get("name") == "bbq":
        lines += ["", "| round | ambiguous acc | ambiguous bias | disambiguated acc | disambiguated bias |",
                  "|---|---|---|---|---|"]
        for row in application["by_round"]:
            cells = [str(row["round"])]
            for condition in ("ambig", "disambig"):
                block = row[condition]
                cells += [_ci(block["accuracy"]) + f" (n={block['accuracy']['n']})",
                          _num(block["bias"]["score"], signed=True)]
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    print("\n\n".join(run_table(Path(arg)) for arg in sys.argv[1:]))
