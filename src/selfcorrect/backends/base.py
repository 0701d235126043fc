"""The backend interface: one call answers a whole batch.

Every method is rounds of batched generation, so a backend has one verb, `generate(requests)`, and each round sends
all of its unfinished trajectories in one call (vLLM and servers batch them; never loop per sample around a model).

`SamplingParams` is the one sampling spec, validated once for every backend (the range below is the one vLLM and
OpenAI-compatible servers accept, so a config that works on one backend works on all); each backend translates it in
one place (`to_vllm`, `to_openai` below), so a setting means the same thing everywhere.

Greedy decoding has one answer, so `n` greedy samples are that answer n times: backends draw `params.draws` samples
(1 when greedy) and `repeat_greedy` fills the rest. vLLM refuses n > 1 at temperature 0 ("n must be 1 when using
greedy sampling"), and configs set n and temperature separately, so the translation lives here, not in each method.
"""

from __future__ import annotations

import hashlib
from abc import ABC, abstractmethod
from collections.abc import Sequence
from copy import deepcopy
from dataclasses import dataclass, field, replace
from typing import Annotated, Any

from pydantic import AfterValidator

#: Highest temperature: vLLM raises above 2 and OpenAI's API takes [0, 2].
MAX_TEMPERATURE = 2.0
#: Lowest sampled temperature: vLLM silently raises values in (0, 0.01) to 0.01, so they would not mean what they say.
MIN_SAMPLED_TEMPERATURE = 0.01


def check_temperature(value: float) -> float:
    """0 (greedy) or a sampled temperature in [0.01, 2], the range every backend honours as written."""
    if value == 0 or MIN_SAMPLED_TEMPERATURE <= value <= MAX_TEMPERATURE:
        return value
    raise ValueError(f"temperature must be 0 (greedy) or in [{MIN_SAMPLED_TEMPERATURE:g}, {MAX_TEMPERATURE:g}], "
                     f"got {value:g}")


#: A config field holding a temperature: checked when the config is read, never in the middle of a round.
Temperature = Annotated[float, AfterValidator(check_temperature)]


@dataclass(frozen=True)
class SamplingParams:
    """How to sample. temperature 0 means greedy. `seed` is the request's own seed, which gives the request its own
    random stream; whether its output is also independent of the rest of its batch depends on the backend
    (docs/scale.md, "what each backend guarantees")."""

    temperature: float = 0.0
    top_p: float = 1.0
    max_new_tokens: int = 64
    n: int = 1
    seed: int = 0
    stop: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        check_temperature(self.temperature)
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.n < 1 or self.max_new_tokens < 1:
            raise ValueError("n and max_new_tokens must be >= 1")
        if not all(self.stop):
            raise ValueError("stop strings must not be empty")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0

    @property
    def draws(self) -> int:
        """How many samples a backend must draw: all n, or one when greedy (`repeat_greedy` copies it)."""
        return 1 if self.greedy else self.n

    def to_vllm(self) -> dict[str, Any]:
        return {"temperature": self.temperature, "top_p": self.top_p, "max_tokens": self.max_new_tokens,
                "n": self.draws, "seed": self.seed, "stop": list(self.stop) or None, "logprobs": 0}

    def to_openai(self) -> dict[str, Any]:
        payload: dict[str, Any] = {"temperature": self.temperature, "top_p": self.top_p,
                                   "max_tokens": self.max_new_tokens, "n": self.draws, "seed": self.seed}
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
    #: Teacher-forced scoring of arbitrary continuations (forward passes through `model`, see option_scoring.py).
    supports_option_scoring: bool = False
    #: False for a backend whose answers come from somewhere other than a model (a script): it takes no `model=`.
    has_model: bool = True
    #: The backend itself turns a built-in model name (`selfcorrect models`) into that model's folder.
    resolves_builtin_models: bool = False

    @abstractmethod
    def generate(self, requests: Sequence[GenerationRequest]) -> list[Generation]:
        """Answer every request; returns `sum(r.params.n)` generations ordered by request, then sample."""

    @property
    def model_id(self) -> str:
        """What identifies the model in caches and run records."""
        return self.name

    def describe(self) -> dict[str, Any]:
        """What a run records about the backend (its name, model and any setting resolved at load, like dtype)."""
        return {"name": self.name, "model": self.model_id}
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


def repeat_greedy(samples: list[Generation], params: SamplingParams) -> list[Generation]:
    """`params.draws` samples of one request -> its n samples: a greedy answer repeated as samples 1..n-1."""
    if len(samples) == params.n:
        return samples
    return [samples[0], *(replace(deepcopy(samples[0]), sample_index=k) for k in range(1, params.n))]


def truncate_at_stop(text: str, stop: Sequence[str]) -> str:
    """Cut `text` at the earliest stop string, which is excluded, as vLLM and OpenAI servers do."""
    positions = [text.find(s) for s in stop if s]
    found = [p for p in positions if p >= 0]
    return text[:min(found)] if found else text
