"""A stand-in for the two names of `vllm` the backend uses, `LLM` and `SamplingParams`, for tests without a GPU.

`SamplingParams` validates what vLLM's own does (vllm/sampling_params.py, `__post_init__`, `_verify_args` and
`_verify_greedy_sampling`), so a request the real engine would refuse is refused here too:
- n >= 1, and n == 1 when greedy (temperature < 1e-5): "n must be 1 when using greedy sampling";
- temperature finite, >= 0 and <= 2; a temperature in (0, 0.01) is silently raised to 0.01;
- top_p in (0, 1]; max_tokens >= 1; logprobs >= 0 or -1; no empty stop string; seed -1 means no seed;
- unknown fields are a TypeError (vLLM's SamplingParams is a struct with fixed fields).
The output objects have the fields of vLLM's RequestOutput / CompletionOutput / Logprob that the backend reads.

`LLM` answers sample k of request i with text f"r{i}s{k}" (outputs in reverse index order, as nothing promises
order) and finish reason "length" for k > 0, "stop" otherwise, unless `finish_reason` says another (or None).
Two prompts act up, for the engine-process tests: token ids `CRASH` end the process, `FAIL` raise in `generate`.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from typing import Any

CRASH = [-7]
FAIL = [-8]
_SAMPLING_EPS = 1e-5
_MIN_TEMPERATURE = 1e-2


class VLLMValidationError(ValueError):
    """vLLM's validation error is a ValueError too."""


@dataclass
class SamplingParams:
    n: int = 1
    temperature: float = 1.0
    top_p: float = 1.0
    seed: int | None = None
    stop: str | list[str] | None = None
    max_tokens: int | None = 16
    logprobs: int | None = None

    def __post_init__(self) -> None:
        if 0 < self.temperature < _MIN_TEMPERATURE:
            self.temperature = _MIN_TEMPERATURE
        if self.seed == -1:
            self.seed = None
        self.stop = [] if self.stop is None else [self.stop] if isinstance(self.stop, str) else self.stop
        if not isinstance(self.n, int) or self.n < 1:
            raise VLLMValidationError(f"n must be at least 1, got {self.n}.")
        if not math.isfinite(self.temperature):
            raise VLLMValidationError(f"temperature must be a finite number, got {self.temperature}.")
        if self.temperature < 0.0:
            raise VLLMValidationError(f"temperature must be non-negative, got {self.temperature}.")
        if self.temperature > 2.0:
            raise VLLMValidationError(f"temperature must be in [0, 2], got {self.temperature}.")
        if not 0.0 < self.top_p <= 1.0:
            raise VLLMValidationError(f"top_p must be in (0, 1], got {self.top_p}.")
        if self.max_tokens is not None and self.max_tokens < 1:
            raise VLLMValidationError(f"max_tokens must be at least 1, got {self.max_tokens}.")
        if self.logprobs is not None and self.logprobs != -1 and self.logprobs < 0:
            raise VLLMValidationError(f"logprobs must be non-negative or -1, got {self.logprobs}.")
        if any(not s for s in self.stop):
            raise VLLMValidationError("stop cannot contain an empty string.")
        if self.temperature < _SAMPLING_EPS:
            self.top_p = 1.0
            if self.n > 1:
                raise VLLMValidationError(f"n must be 1 when using greedy sampling, got {self.n}.")


@dataclass
class Logprob:
    logprob: float
    rank: int | None = None
    decoded_token: str | None = None


@dataclass
class CompletionOutput:
    index: int
    text: str
    token_ids: list[int]
    cumulative_logprob: float | None
    logprobs: list[dict[int, Logprob]] | None
    finish_reason: str | None = None
    stop_reason: int | str | None = None


@dataclass
class RequestOutput:
    request_id: str
    prompt_token_ids: list[int]
    outputs: list[CompletionOutput]
    finished: bool = True


@dataclass
class LLM:
    """Takes `vllm.LLM`'s constructor options the backend passes (others are a TypeError) and records each call."""

    model: str = "stand-in"
    tensor_parallel_size: int = 1
    gpu_memory_utilization: float = 0.9
    dtype: str = "auto"
    max_model_len: int | None = None
    seed: int = 0
    trust_remote_code: bool = False
    enforce_eager: bool = False
    tokenizer: Any = None
    finish_reason: str | None = ""  # "": the usual ones above; None: no finish reason at all
    calls: list[tuple[list[dict], list[SamplingParams]]] = field(default_factory=list)

    def get_tokenizer(self) -> Any:
        return self.tokenizer

    def generate(self, prompts: list[dict], sampling_params: list[SamplingParams],
                 use_tqdm: bool = True) -> list[RequestOutput]:
        self.calls.append((prompts, sampling_params))
        outputs = []
        for i, (prompt, params) in enumerate(zip(prompts, sampling_params, strict=True)):
            if prompt["prompt_token_ids"] == CRASH:
                os._exit(7)
            if prompt["prompt_token_ids"] == FAIL:
                raise ValueError("the stand-in refuses this prompt")
            samples = [CompletionOutput(
                index=k, text=f"r{i}s{k}", token_ids=[10 + k, 2], cumulative_logprob=-1.5,
                logprobs=None if params.logprobs is None
                else [{10 + k: Logprob(-1.0), 99: Logprob(-3.0)}, {2: Logprob(-0.5)}],
                finish_reason=("length" if k else "stop") if self.finish_reason == "" else self.finish_reason)
                for k in range(params.n)]
            outputs.append(RequestOutput(str(i), prompt["prompt_token_ids"], samples[::-1]))
        return outputs
