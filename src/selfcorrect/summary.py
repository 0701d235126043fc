"""The schema of `summary.json`, the one results file every command writes (`RunFolder.write_summary`) and every
reader reads back (`RunFolder.read_summary`): `selfcorrect report`, `stasc sweep`, `insec compare`, the budget of a
STaSC control.

Typed dictionaries, not classes, because the file is plain JSON that users read with anything: the types document
the keys and let a type checker follow them, and reading costs nothing. `schema_version` is written into every
summary; a file without it predates the field and is read as version 1 (whose InSeC summaries spelled flips
`wrong_to_right`/`right_to_wrong` and iterations `rounds`, renamed on reading).
"""

from __future__ import annotations

from typing import Any, Literal, NotRequired, TypedDict

SUMMARY_SCHEMA_VERSION = 2


class Estimate(TypedDict):
    """A mean over examples with its 95% percentile-bootstrap interval."""

    value: float
    ci: list[float]


class RoundAccuracy(Estimate):
    round: int
    n: int


# `from` is a keyword, hence the functional form.
Transition = TypedDict("Transition", {"from": int, "to": int, "counts": dict[str, int], "i_to_c": float,
                                      "c_to_i": float})
"""Flips between two consecutive rounds: `counts` keyed `I->C`, `C->C`, `C->I`, `I->I`; the shares are
example-weighted, like `delta_i_to_c`."""


class Metrics(TypedDict):
    """`analysis.metrics.summarize`: accuracy per round, and the round 1 -> 2 deltas (None with one round)."""

    accuracy_by_round: list[RoundAccuracy]
    delta: Estimate | None
    delta_i_to_c: Estimate | None
    delta_c_to_i: Estimate | None
    transitions: list[Transition]
    n_examples: int
    n_trajectories: int


class Uncertainty(TypedDict):
    by_round: list[dict[str, Any]]
    answer_grouping: str
    option_confidence: str
    #: Extra samples drawn per answer for the answer distribution (eval's `--samples`).
    samples: int


class Environment(TypedDict):
    versions: dict[str, str]
    platform: str
    git_hash: str | None
    date: str


class EvalSummary(TypedDict):
    """`selfcorrect eval` (and every evaluation inside stasc): plus the task's own extras at the top level."""

    schema_version: int
    command: Literal["eval"]
    method: str
    task: dict[str, Any]
    model: str
    backend: dict[str, Any]
    seed: int
    prompts: dict[str, str]
    metrics: Metrics
    stopping: dict[str, Any]
    convergence: dict[str, Any]
    uncertainty: Uncertainty
    application: dict[str, Any]
    timings: dict[str, Any]
    checks: NotRequired[dict[str, Any]]
    environment: Environment


class STaSCIteration(TypedDict):
    iteration: int
    #: "<split>@T<temperature>" -> the metrics of that evaluation.
    eval: dict[str, Metrics]
    training: NotRequired[dict[str, Any]]
    selection: NotRequired[dict[str, Any]]
    note: NotRequired[str]


class STaSCSummary(TypedDict):
    schema_version: int
    command: Literal["stasc"]
    variant: str
    method: str
    seed: int
    task: dict[str, Any]
    iterations: list[STaSCIteration]
    selection: dict[str, Any]
    timings: dict[str, float]
    environment: Environment


class MarkerMetrics(TypedDict):
    """`methods.insec_data.marker_metrics`: accuracy and the correction marker's behaviour."""

    accuracy: Estimate
    first_attempt_accuracy: Estimate
    marker_rate: Estimate
    marker_precision: Estimate | None
    marker_recall: Estimate | None
    i_to_c: Estimate
    c_to_i: Estimate
    counts: dict[str, int]
    n_examples: int


class InSeCIteration(TypedDict):
    iteration: int
    eval: MarkerMetrics
    data: NotRequired[dict[str, int]]
    training: NotRequired[dict[str, Any]]


class InSeCSummary(TypedDict):
    schema_version: int
    command: Literal["insec"]
    negatives: str
    seed: int
    task: dict[str, Any]
    iterations: list[InSeCIteration]
    final: MarkerMetrics
    timings: dict[str, float]
    model: str
    environment: Environment


Summary = EvalSummary | STaSCSummary | InSeCSummary


def _renamed(data: dict[str, Any], names: dict[str, str]) -> dict[str, Any]:
    return {names.get(key, key): value for key, value in data.items()}


def upgrade(data: dict[str, Any]) -> dict[str, Any]:
    """A summary of any version this code knows, in the current one (`ValueError` for a newer one)."""
    version = data.get("schema_version", 1)
    if not isinstance(version, int) or version > SUMMARY_SCHEMA_VERSION:
        raise ValueError(f"unsupported summary schema_version {version!r} "
                         f"(this selfcorrect reads up to {SUMMARY_SCHEMA_VERSION})")
    if version == 1 and data.get("command") == "insec":
        flips = {"wrong_to_right": "i_to_c", "right_to_wrong": "c_to_i"}

        def metrics(block: dict[str, Any]) -> dict[str, Any]:
            return {**_renamed(block, flips), "counts": _renamed(block.get("counts", {}), flips)}

        data = {**_renamed(data, {"rounds": "iterations"}), "final": metrics(data["final"]),
                "iterations": [{**_renamed(row, {"round": "iteration"}), "eval": metrics(row["eval"])}
                               for row in data["rounds"]]}
    return {**data, "schema_version": SUMMARY_SCHEMA_VERSION}


__all__ = ["SUMMARY_SCHEMA_VERSION", "Environment", "Estimate", "EvalSummary", "InSeCIteration", "InSeCSummary",
           "MarkerMetrics", "Metrics", "RoundAccuracy", "STaSCIteration", "STaSCSummary", "Summary", "Transition",
           "Uncertainty", "upgrade"]
