"""InSeC's sequences: inline mistakes with their corrections for training, and how an output with markers is read.

Format. A negative training sequence is the assistant turn `prefix mistake <fix> [<why-tag>] correction`:
- step level (chain answers such as the sandbox trace): `prefix` is the attempt up to its FIRST wrong step (plus the
  characters of that step that are still right), `mistake` the rest of that step, and `correction` the right step
  and every step after it. The marker means "the step just written is wrong: here it is again, then the rest", so
  what was verified is never rewritten (copy-to-first-error, as in `sandbox_chain.correction_targets`, but inline);
- answer level: `prefix` is empty, `mistake` a whole wrong answer, `correction` the whole right answer, and the
  marker means "discard the answer so far".
An output is read with the same semantics, marker by marker, so the final answer is what the output stands by after
its LAST marker: at answer level the text after it; at step level the steps before the last marked step followed by
the text after the marker, which the task's own reward (the sandbox's exact trace) then scores.

Loss, as `training.masks` segments (`loss_on="spans"`): prefix, marker, reason and correction are learnt (`pos`);
the mistake is context by default (`none`), so the model learns to notice and fix a mistake, never to make one;
`unlikelihood` marks it `neg` (pushed down), `full` trains on it like everything else (the ablation).

Marker and reason tokens are added as ordinary (non-special) added tokens: every backend decodes with
`skip_special_tokens=True`, which would silently delete a special marker from the text being read. Added tokens are
still matched whole before any pre-tokenizer, so `<fix>` is one token for the sandbox's character tokenizer and for
byte-level BPE tokenizers alike.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from selfcorrect.tasks.corruptions import MistakeKit, first_wrong_step
from selfcorrect.trajectory import Example

Granularity = Literal["step", "answer"]
MistakeLoss = Literal["none", "unlikelihood", "full"]
MISTAKE_SEGMENT = {"none": "none", "unlikelihood": "neg", "full": "pos"}


def reason_token(tag: str) -> str:
    return f"<why-{tag}>"


def marker_tokens(kit: MistakeKit, granularity: Granularity, marker: str, reasons: bool) -> list[str]:
    """Every token InSeC adds for this task: the marker, and one token per reason tag when reasons are on."""
    tags = kit.steps.reasons if granularity == "step" and kit.steps else kit.answer_reasons
    return [marker, *(reason_token(t) for t in tags)] if reasons else [marker]


def add_tokens(model_dir: str | Path, out_dir: str | Path, tokens: Sequence[str],
               init: Mapping[str, str] | None = None) -> Path:
    """Save model + tokenizer with `tokens` added, so `AutoModelForCausalLM` / `AutoTokenizer` reload them as an
    ordinary model folder. The embedding matrix grows only when it has no spare rows (some checkpoints pad it).

    A new token starts near the mean of the old embeddings (transformers' mean_resizing), or, when `init` maps it
    to a text, as the mean embedding of that text's tokens (input and, when untied, output embeddings): a marker
    that starts as the end-of-turn token starts as an alternative ending of an attempt, which the model already
    knows where to put, instead of a token it has never predicted.
    """
    import torch
    from tokenizers import AddedToken

    from selfcorrect.errors import SelfCorrectError
    from selfcorrect.training.finetune import load_model

    model, tokenizer = load_model(model_dir)
    unknown = sorted(set(init or {}) - set(tokens))
    if unknown:
        raise SelfCorrectError(f"token_init names token(s) {', '.join(unknown)} that InSeC does not add; it adds "
                               f"{', '.join(tokens)}")
    tokenizer.add_tokens([AddedToken(token, special=False, normalized=False) for token in tokens])
    if len(tokenizer) > model.get_input_embeddings().weight.shape[0]:
        from transformers.utils import logging as hf_logging

        verbosity = hf_logging.get_verbosity()
        hf_logging.set_verbosity_error()  # its note on how new rows are initialised is not the user's business
        try:
            model.resize_token_embeddings(len(tokenizer))
        finally:
            hf_logging.set_verbosity(verbosity)
    tables = [model.get_input_embeddings().weight, model.get_output_embeddings().weight]
    for token, text in (init or {}).items():
        source = tokenizer(text, add_special_tokens=False)["input_ids"]
        if not source:
            raise SelfCorrectError(f"token_init: {text!r} (for {token}) is no tokens in this tokenizer")
        target = tokenizer.convert_tokens_to_ids(token)
        with torch.no_grad():
            for table in {id(t): t for t in tables}.values():
                table[target] = table[source].mean(dim=0)
    out = Path(out_dir)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


@dataclass(frozen=True)
class Negative:
    """One mistake and its correction; `source` is `on_policy` or the corruption's name."""

    prefix: str
    mistake: str
    correction: str
    reason: str
    source: str

    def segments(self, marker: str, reasons: bool, mistake_loss: MistakeLoss) -> list[dict[str, str]]:
        fix = marker + (reason_token(self.reason) if reasons else "") + self.correction
        parts = [(self.prefix, "pos"), (self.mistake, MISTAKE_SEGMENT[mistake_loss]), (fix, "pos")]
        return [{"text": text, "train": train} for text, train in parts if text]


def _common_prefix(a: str, b: str) -> int:
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return n


def negative_from(kit: MistakeKit, example: Example, attempt: str, granularity: Granularity,
                  source: str) -> Negative | None:
    """The negative an attempt makes, or None when it has no mistake to mark (it is right, or at step level it
    only lacks steps at its end)."""
    target = kit.target(example)
    if granularity == "answer" or kit.steps is None:
        return Negative("", attempt, target, kit.answer_reasons[0], source)
    steps, gold = kit.steps.split(attempt), kit.steps.split(target)
    k = first_wrong_step(steps, gold)
    if k is None or k >= len(steps):
        return None
    wrong, right = steps[k], gold[k] if k < len(gold) else ""
    keep = _common_prefix(wrong, right)
    prefix = kit.steps.join(steps[:k]) + (kit.steps.sep if k else "") + wrong[:keep]
    return Negative(prefix, wrong[keep:], kit.steps.join(gold[k:]), kit.steps.reason(wrong, right), source)


@dataclass
class Reading:
    """How an output reads under the marker semantics.

    `errors` counts wrong units (steps, or answers) written where everything kept before them was right: a step
    after an unmarked wrong step is wrong too, but it is the same mistake, not a new chance to catch one. `caught`
    counts the errors followed at once by a marker; `precise` the markers that follow a wrong unit.
    """

    final: str
    first_ok: bool
    markers: int
    precise: int
    errors: int
    caught: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def read_output(text: str, marker: str, reason_tokens: Sequence[str], split: Callable[[str], list[str]],
                join: Callable[[list[str]], str], wrong: Callable[[int, str], bool]) -> Reading:
    """Apply the markers of `text` in order: each one takes back the last unit kept; `wrong(index, unit)` judges a
    unit at its position. `first_ok` is whether the text before the first marker had no wrong unit (judged by the
    caller on the final answer when there is no marker)."""
    running: list[str] = []
    flags: list[bool] = []
    markers = precise = errors = caught = 0
    first_ok, pending = True, False
    for n, segment in enumerate(text.split(marker)):
        if n:
            markers += 1
            caught += pending
            pending = False
            if running:
                precise += flags.pop()
                running.pop()
            for token in reason_tokens:
                segment = segment.removeprefix(token)
        for unit in split(segment):
            bad = wrong(len(running), unit)
            pending = bad and not any(flags)
            errors += pending
            first_ok = first_ok and not (n == 0 and bad)
            running.append(unit)
            flags.append(bad)
    return Reading(join(running), first_ok, markers, precise, errors, caught)


def reader(kit: MistakeKit, granularity: Granularity, marker: str, reason_tokens: Sequence[str],
           score: Callable[[Example, str], Any]) -> Callable[[Example, str], Reading]:
    """`read(example, text)` for a task: step units judged against the gold steps, answers by the task's reward."""

    def read(example: Example, text: str) -> Reading:
        if granularity == "step" and kit.steps is not None:
            gold = kit.steps.split(kit.target(example))
            return read_output(text, marker, reason_tokens, kit.steps.split, kit.steps.join,
                               lambda i, unit: i >= len(gold) or unit != gold[i])
        return read_output(text, marker, reason_tokens, lambda s: [s.strip()] if s.strip() else [],
                           lambda units: units[-1] if units else "",
                           lambda _i, unit: not score(example, unit).correct)

    return read


def marker_metrics(trajectories: Sequence[Any], seed: int = 0, n_boot: int = 1000) -> dict[str, Any]:
    """Accuracy and the marker's behaviour over evaluated trajectories (`metadata["insec"]` holds each Reading,
    the turn's verdict the final answer's score), per example with bootstrap intervals.

    Precision and recall are ratios of sums (markers after a wrong unit / markers; caught / errors), bootstrapped
    by resampling examples; they are None when nothing was marked or nothing was wrong. The flips `i_to_c` and
    `c_to_i` are shares of all outputs whose first attempt (the text before the first marker) and final
    answer differ in correctness.
    """
    from selfcorrect.analysis.metrics import bootstrap_ci, estimate, per_example

    def column(value: Callable[[Any], float]) -> np.ndarray:
        return per_example(trajectories, value)[1]

    def info(t: Any) -> dict[str, Any]:
        return t.metadata["insec"]

    final_ok = column(lambda t: t.last_answer.verdict.correct)
    first_ok = column(lambda t: info(t)["first_ok"])
    marked = column(lambda t: info(t)["markers"] > 0)
    i_to_c = column(lambda t: info(t)["markers"] > 0 and not info(t)["first_ok"] and t.last_answer.verdict.correct)
    c_to_i = column(lambda t: info(t)["markers"] > 0 and info(t)["first_ok"] and not t.last_answer.verdict.correct)
    sums = {key: column(lambda t, key=key: info(t)[key]) for key in ("markers", "precise", "errors", "caught")}

    def mean(values: np.ndarray) -> dict[str, Any]:
        return estimate(values, seed, n_boot)

    def ratio(num: np.ndarray, den: np.ndarray) -> dict[str, Any] | None:
        if den.sum() == 0:
            return None
        # bootstrap_ci resamples one value per example: resample example indices and take the ratio of sums
        def stat(rows: np.ndarray) -> float:
            rows = rows.astype(int)
            return float(num[rows].sum() / max(den[rows].sum(), 1e-12))

        lo, hi = bootstrap_ci(np.arange(num.size), stat=stat, n_boot=n_boot, seed=seed)
        return {"value": float(num.sum() / den.sum()), "ci": [lo, hi]}

    return {"accuracy": mean(final_ok), "first_attempt_accuracy": mean(first_ok), "marker_rate": mean(marked),
            "marker_precision": ratio(sums["precise"], sums["markers"]),
            "marker_recall": ratio(sums["caught"], sums["errors"]),
            "i_to_c": mean(i_to_c), "c_to_i": mean(c_to_i),
            "counts": {key: round(float(values.sum())) for key, values in
                       {**sums, "marked_outputs": marked, "i_to_c": i_to_c, "c_to_i": c_to_i}.items()},
            "n_examples": int(final_ok.size)}
