"""The backend interface: one call answers a whole batch.

Every method is rounds of batched generation, so a backend has one verb, `generate(requests)`, and each round sends
all of its unfinished trajectories in one call (vLLM and servers batch them; never loop per sample around a model).

`SamplingParams` is the one sampling spec; each backend translates it in one place (`to_hf`, `to_vllm`,
`to_openai` below), so a setting means the same thing everywhere.
"""

from __future__ import annotations

import hashlib
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class SamplingParams:
    """How to sample. temperature 0 means greedy. `seed` is the request's own seed: backends that can honour it
    make a request's output independent of which other requests share its batch."""

    temperature: float = 0.0
    top_p: float = 1.0
    max_new_tokens: int = 64
    n: int = 1
    seed: int = 0
    stop: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.n < 1 or self.max_new_tokens < 1:
            raise ValueError("n and max_new_tokens must be >= 1")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0

    def to_vllm(self) -> dict[str, Any]:
        return {"temperature": self.temperature, "top_p": self.top_p, "max_tokens": self.max_new_tokens, "n": self.n,
                "seed": self.seed, "stop": list(self.stop) or None, "logprobs": 0}

    def to_openai(self) -> dict[str, Any]:
        payload: dict[str, Any] = {"temperature": self.temperature, "top_p": self.top_p,
                                   "max_tokens": self.max_new_tokens, "n": self.n, "seed": self.seed}
        if self.stop:
            payload["stop"] = list(self.stop)
        return payload


@dataclass
class GenerationRequest:
    """One prompt: chat `messages` (rendered with the model's chat template) or a raw `prompt` string.

    `hidden_layers` asks for hidden states of those layers (0 = embeddings, -1 = last) at the last prompt token,
    i.e. the model's state just before it answers; `hidden_span = k` averages them over the last k prompt tokens
    instead (e.g. over the previous answer, where a model that checks its work may flag the error). Backends
    without access to activations refuse them.
    """

    params: SamplingParams
    messages: list[dict[str, str]] | None = None
    prompt: str | None = None
    hidden_layers: tuple[int, ...] = ()
    hidden_span: int = 1
    id: str = ""

    def __post_init__(self) -> None:
        if (self.messages is None) == (self.prompt is None):
            raise ValueError("a GenerationRequest needs exactly one of messages= or prompt=")

    def cache_key(self, model: str) -> str:
        """A stable hash of everything that decides the output: model, prompt and sampling settings, seed included."""
        text = repr((model, self.messages, self.prompt, self.params, self.hidden_layers)
                    + ((self.hidden_span,) if self.hidden_span != 1 else ()))
        return hashlib.blake2b(text.encode(), digest_size=16).hexdigest()


@dataclass
class Generation:
    """One sampled completion. `request_index`/`sample_index` say which request and which of its n samples."""

    text: str
    finish_reason: str  # "stop" (end of sequence or a stop string) or "length"
    token_ids: list[int] = field(default_factory=list)
    token_logprobs: list[float] | None = None  # of the model's distribution at temperature 1
    token_entropies: list[float] | None = None
    hidden_states: dict[int, list[float]] | None = None
    request_index: int = 0
    sample_index: int = 0


class Backend(ABC):
    """Answers batches of `GenerationRequest`s. Subclasses say what they can do with the class flags."""

    name: str = "backend"
    supports_logprobs: bool = True
    supports_hidden_states: bool = False

    @abstractmethod
    def generate(self, requests: Sequence[GenerationRequest]) -> list[Generation]:
        """Answer every request; returns `sum(r.params.n)` generations ordered by request, then sample."""

    @property
    def model_id(self) -> str:
        """What identifies the model in caches and run records."""
        return self.name

    def capabilities(self) -> dict[str, str]:
        """What this backend found it can and cannot give (a server's logprobs and seeds), for the run's summary;
        empty where nothing needs finding out."""
        return {}

    def close(self) -> None:  # noqa: B027 - optional hook, most backends hold nothing to release
        """Release resources (server connections, GPU memory)."""


def request_seed(*parts: object) -> int:
    """A 63-bit seed from any key (run seed, example id, round, sample index): stable across runs and machines."""
    digest = hashlib.blake2b(repr(parts).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & ((1 << 63) - 1)


def truncate_at_stop(text: str, stop: Sequence[str]) -> str:
    """Cut `text` at the earliest stop string, which is excluded, as vLLM and OpenAI servers do."""
    positions = [text.find(s) for s in stop if s]
    found = [p for p in positions if p >= 0]
    return text[:min(found)] if found else text
