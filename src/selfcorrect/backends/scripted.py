"""A backend with no model: answers come from a script, so the round loop, resume and result schema can be tested
in milliseconds and their outcomes asserted exactly.

A script is either a function `respond(request, sample_index) -> str` or a table mapping a conversation's first
user message to the answers of its successive assistant turns (what the model says first, after one review, ...).
Token statistics are pseudo-values derived from the text and the request seed: meaningless, but deterministic and
non-trivial, so uncertainty code runs on scripted runs too.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from selfcorrect.backends.base import Backend, Generation, GenerationRequest, request_seed, truncate_at_stop
from selfcorrect.errors import SelfCorrectError

Respond = Callable[[GenerationRequest, int], str]


def _conversation_key(request: GenerationRequest) -> tuple[str, int]:
    """(first user message, number of assistant turns so far); a raw prompt is a conversation with no turns yet."""
    if request.messages is None:
        return request.prompt or "", 0
    first_user = next((m["content"] for m in request.messages if m["role"] == "user"), "")
    return first_user, sum(m["role"] == "assistant" for m in request.messages)


class ScriptedBackend(Backend):
    """Answers from `respond` or from the `answers` table (`default` for questions the table lacks).

    With a table, the k-th answer of a question is used when the request already holds k − 1 assistant turns, and
    the last one repeats. `calls` records the batch size of every `generate` call, so tests can assert that a
    method sends one call per round.
    """

    name = "scripted"
    supports_logprobs = True
    supports_hidden_states = False
    has_model = False

    def __init__(self, respond: Respond | None = None, answers: dict[str, list[str]] | None = None,
                 default: str = "") -> None:
        if respond is not None and answers is not None:
            raise SelfCorrectError("scripted backend: give either respond= or answers=, not both")
        if answers is not None and any(not isinstance(v, list) or not v for v in answers.values()):
            raise SelfCorrectError("scripted backend: every entry of answers= must be a non-empty list of strings")
        self.respond = respond
        self.answers = answers or {}
        self.default = default
        self.calls: list[int] = []

    def _text(self, request: GenerationRequest, sample_index: int) -> str:
        if self.respond is not None:
            return self.respond(request, sample_index)
        question, n_assistant = _conversation_key(request)
        script = self.answers.get(question)
        return script[min(n_assistant, len(script) - 1)] if script else self.default

    def generate(self, requests: Sequence[GenerationRequest]) -> list[Generation]:
        self.calls.append(len(requests))
        generations = []
        for request_index, request in enumerate(requests):
            for sample_index in range(request.params.n):
                text = truncate_at_stop(self._text(request, sample_index), request.params.stop)
                rng = np.random.default_rng(request_seed(text, request.params.seed))
                generations.append(Generation(
                    text=text, finish_reason="stop", token_ids=[ord(ch) for ch in text],
                    token_logprobs=(-rng.uniform(0.01, 3.0, len(text))).tolist(),
                    token_entropies=rng.uniform(0.0, 3.0, len(text)).tolist(),
                    request_index=request_index, sample_index=sample_index))
        return generations
