"""The one data model: an `Example`, the `Turn`s a method produces for it, and the `Trajectory` that holds both.

Every method (intrinsic loops, Checking-as-Context, STaSC, InSeC) reads and writes this shape, so one results
format, one metrics module and one report serve them all. A trajectory serialises to one JSON line carrying
`schema_version`, so old run folders stay readable when the format grows.

Ids encode the fan-out tree: `q17` is an example, `q17/a2` its third sampled first answer, `q17/a2/c4` the fifth
correction of that answer. STaSC's N_init x N_corr tree and uncertainty's n samples are the same mechanism.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

SCHEMA_VERSION = 1

Role = Literal["system", "user", "assistant"]
TurnKind = Literal["prompt", "answer", "check", "correction", "feedback"]
"""`prompt` is a user-side instruction (the question, a review request); `feedback` is a verdict injected from
outside the model (CaC's critic-noise control), written as an assistant turn where the model's own check would be;
the other three are the model's own outputs."""


@dataclass
class Verdict:
    """What a reward function says about one output: a score in [0, 1], the answer it extracted, and why."""

    score: float
    extracted: str | None = None
    reason: str = ""

    @property
    def correct(self) -> bool:
        return self.score >= 1.0


@dataclass
class Example:
    """One task item. `fields` feed the prompt templates; `gold` is whatever the task's reward compares against."""

    id: str
    fields: dict[str, Any]
    gold: Any = None
    metadata: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "fields": self.fields, "gold": self.gold, "metadata": self.metadata}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Example:
        return cls(id=str(data["id"]), fields=dict(data["fields"]), gold=data.get("gold"),
                   metadata=dict(data.get("metadata") or {}))


@dataclass
class LogprobSummary:
    """Per-turn summary of token log-probabilities, so uncertainty can be computed from saved results alone.

    Log-probabilities are those of the model's own distribution (temperature 1, no top-p), whatever the sampling
    settings were, so that they are comparable across decoding strategies.
    """

    n_tokens: int
    sum_logprob: float
    mean_entropy: float | None = None

    @property
    def mean_nll(self) -> float:
        return -self.sum_logprob / max(self.n_tokens, 1)


@dataclass
class Turn:
    role: Role
    kind: TurnKind
    round: int
    text: str
    template: str | None = None
    extracted: str | None = None
    verdict: Verdict | None = None
    logprobs: LogprobSummary | None = None
    finish_reason: str | None = None

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        return {k: v for k, v in data.items() if v is not None}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Turn:
        data = dict(data)
        if data.get("verdict") is not None:
            data["verdict"] = Verdict(**data["verdict"])
        if data.get("logprobs") is not None:
            data["logprobs"] = LogprobSummary(**data["logprobs"])
        return cls(**data)


@dataclass
class Trajectory:
    """An example and the conversation a method had about it."""

    id: str
    example: Example
    turns: list[Turn] = field(default_factory=list)
    stopped: bool = False
    stop_reason: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)

    def add(self, turn: Turn) -> Turn:
        self.turns.append(turn)
        return turn

    def model_turns(self) -> list[Turn]:
        """The assistant turns that carry an answer to the task (first answer and corrections), in order."""
        return [t for t in self.turns if t.role == "assistant" and t.kind in ("answer", "correction")]

    @property
    def last_answer(self) -> Turn | None:
        turns = self.model_turns()
        return turns[-1] if turns else None

    def messages(self) -> list[dict[str, str]]:
        """The conversation as chat messages: what the next request carries (the whole history, always)."""
        return [{"role": t.role, "content": t.text} for t in self.turns]

    def child(self, suffix: str) -> Trajectory:
        """A copy that shares this history, for fanning out n samples (`q17` -> `q17/a2`)."""
        return Trajectory(id=f"{self.id}/{suffix}", example=self.example,
                          turns=[Turn.from_dict(t.to_dict()) for t in self.turns],
                          metadata=dict(self.metadata))

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"schema_version": SCHEMA_VERSION, "id": self.id, "example": self.example.to_dict(),
                                "turns": [t.to_dict() for t in self.turns], "stopped": self.stopped}
        if self.stop_reason is not None:
            data["stop_reason"] = self.stop_reason
        if self.metadata:
            data["metadata"] = self.metadata
        return data

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), ensure_ascii=False, sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Trajectory:
        version = data.get("schema_version")
        if version != SCHEMA_VERSION:
            raise ValueError(f"unsupported trajectory schema_version {version!r} "
                             f"(this selfcorrect reads {SCHEMA_VERSION})")
        return cls(id=data["id"], example=Example.from_dict(data["example"]),
                   turns=[Turn.from_dict(t) for t in data["turns"]], stopped=bool(data.get("stopped", False)),
                   stop_reason=data.get("stop_reason"), metadata=dict(data.get("metadata") or {}))

    @classmethod
    def from_json(cls, line: str) -> Trajectory:
        return cls.from_dict(json.loads(line))
