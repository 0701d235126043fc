"""The OpenAI wire format, both ways: request bodies -> our `GenerationRequest`s, `Generation`s -> response bodies
and stream chunks. Pure data, no server and no model, so every rule here is testable on its own.

Errors are `APIError`s, answered as OpenAI's {"error": {...}} body with their HTTP status, so the official client
raises its typed errors (BadRequestError, NotFoundError) with our message.
"""

from __future__ import annotations

import secrets
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from selfcorrect.backends.base import Generation, GenerationRequest, SamplingParams

DEFAULT_MAX_TOKENS = 256
MAX_TOP_LOGPROBS = 20  # OpenAI's bound for chat; completions' legacy `logprobs` allows 5
MAX_LEGACY_LOGPROBS = 5


class APIError(Exception):
    """An error answered to the client as OpenAI's {"error": {...}} body with this HTTP status."""

    def __init__(self, status: int, message: str, kind: str = "invalid_request_error") -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.kind = kind

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.kind, "param": None, "code": self.status}}


def _get(body: dict[str, Any], key: str, types: type | tuple[type, ...], default: Any) -> Any:
    """body[key] checked against `types` (bools are not numbers here); absent or null gives `default`."""
    value = body.get(key)
    if value is None:
        return default
    if isinstance(value, bool) and bool not in (types if isinstance(types, tuple) else (types,)):
        raise APIError(400, f"'{key}' must be {getattr(types, '__name__', types)}, got {value!r}")
    if not isinstance(value, types):
        raise APIError(400, f"'{key}' has the wrong type: {value!r}")
    return value


def _content(message: Any) -> dict[str, str]:
    """A chat message as {role, content}; content given as a list of text parts is joined."""
    if not isinstance(message, dict) or not isinstance(message.get("role"), str):
        raise APIError(400, "every message needs a 'role' and a 'content'")
    content = message.get("content")
    if isinstance(content, list):
        content = "".join(p.get("text", "") for p in content if isinstance(p, dict) and p.get("type") == "text")
    if not isinstance(content, str):
        raise APIError(400, f"message content must be a string or a list of text parts, got {content!r}")
    return {"role": message["role"], "content": content}


def sampling_from_body(body: dict[str, Any], chat: bool, default_max_tokens: int = DEFAULT_MAX_TOKENS
                       ) -> SamplingParams:
    """OpenAI request fields -> our SamplingParams (OpenAI's defaults: temperature 1, top_p 1, n 1). A request
    without a seed gets a random one, as on other servers."""
    if not chat and body.get("echo"):
        raise APIError(400, "echo is not supported by selfcorrect serve")
    max_tokens = _get(body, "max_completion_tokens", int, None) if chat else None
    max_tokens = max_tokens or _get(body, "max_tokens", int, default_max_tokens)
    stop = _get(body, "stop", (str, list), [])
    stop = [stop] if isinstance(stop, str) else stop
    if not all(isinstance(s, str) for s in stop):
        raise APIError(400, "'stop' must be a string or a list of strings")
    seed = _get(body, "seed", int, None)
    try:
        return SamplingParams(temperature=float(_get(body, "temperature", (int, float), 1.0)),
                              top_p=float(_get(body, "top_p", (int, float), 1.0)), max_new_tokens=max_tokens,
                              n=_get(body, "n", int, 1), seed=secrets.randbits(63) if seed is None else seed,
                              stop=tuple(s for s in stop if s))
    except ValueError as exc:
        raise APIError(400, str(exc)) from None


def requests_from_body(body: dict[str, Any], chat: bool, default_max_tokens: int = DEFAULT_MAX_TOKENS
                       ) -> list[GenerationRequest]:
    """The GenerationRequests one HTTP request asks for: one for chat, one per prompt for completions."""
    params = sampling_from_body(body, chat, default_max_tokens)
    if chat:
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            raise APIError(400, "'messages' must be a non-empty list")
        return [GenerationRequest(params=params, messages=[_content(m) for m in messages])]
    prompt = body.get("prompt")
    prompts = [prompt] if isinstance(prompt, str) else prompt
    if not isinstance(prompts, list) or not prompts or not all(isinstance(p, str) for p in prompts):
        raise APIError(400, "'prompt' must be a string or a non-empty list of strings (token ids are not supported)")
    return [GenerationRequest(params=params, prompt=p) for p in prompts]


@dataclass(frozen=True)
class Reply:
    """How to answer: which endpoint, whether logprobs (and how many alternatives per token) were asked for, how
    tokens are written, and whether to stream (with a final usage chunk)."""

    chat: bool
    logprobs: bool
    top: int
    token_ids: bool
    stream: bool
    stream_usage: bool

    @classmethod
    def from_body(cls, body: dict[str, Any], chat: bool) -> Reply:
        """Chat asks with `logprobs: true` and `top_logprobs: k`; completions with `logprobs: k` (k alternatives)."""
        if chat:
            wanted = bool(_get(body, "logprobs", bool, False))
            top = _get(body, "top_logprobs", int, 0)
            if top and not wanted:
                raise APIError(400, "'top_logprobs' needs 'logprobs': true")
            bound = MAX_TOP_LOGPROBS
        else:
            legacy = _get(body, "logprobs", int, None)
            wanted, top, bound = legacy is not None, legacy or 0, MAX_LEGACY_LOGPROBS
        if not 0 <= top <= bound:
            raise APIError(400, f"{'top_logprobs' if chat else 'logprobs'} must be between 0 and {bound}, got {top}")
        options = _get(body, "stream_options", dict, {})
        return cls(chat=chat, logprobs=wanted, top=top, token_ids=bool(body.get("return_tokens_as_token_ids")),
                   stream=bool(_get(body, "stream", bool, False)),
                   stream_usage=bool(options.get("include_usage")))


Alternatives = list[list[tuple[int, float]]]
"""Per generated token, the top-k (token id, logprob) of the model's distribution at that position."""


class Writer:
    """Builds response bodies and stream chunks for one request. Tokens are written as text through `tokenizer`
    (the backend's), or as `token_id:<id>` without one or when the request asks so (vLLM's extension)."""

    def __init__(self, reply: Reply, model_name: str, tokenizer: Any = None) -> None:
        self.reply = reply
        self.model_name = model_name
        self.tokenizer = None if reply.token_ids else tokenizer
        self.id = f"{'chatcmpl' if reply.chat else 'cmpl'}-{uuid.uuid4().hex}"
        self.created = int(time.time())

    def token(self, token_id: int) -> str:
        return self.tokenizer.decode([token_id]) if self.tokenizer is not None else f"token_id:{token_id}"

    def logprobs(self, gen: Generation, alternatives: Alternatives | None, start: int = 0,
                 stop: int | None = None) -> dict[str, Any] | None:
        """The `logprobs` object of a choice (or of one chunk: tokens start:stop)."""
        if not self.reply.logprobs or gen.token_logprobs is None or len(gen.token_ids) != len(gen.token_logprobs):
            return None
        stop = len(gen.token_ids) if stop is None else stop
        ids, values = gen.token_ids[start:stop], gen.token_logprobs[start:stop]
        tops = [alternatives[i] if alternatives else [] for i in range(start, stop)]
        tokens = [self.token(i) for i in ids]
        if self.reply.chat:
            return {"content": [{"token": t, "logprob": v, "bytes": list(t.encode()),
                                 "top_logprobs": [{"token": (s := self.token(a)), "logprob": lp,
                                                   "bytes": list(s.encode())} for a, lp in top]}
                                for t, v, top in zip(tokens, values, tops, strict=True)]}
        offsets, position = [], 0
        for token in tokens:
            offsets.append(position)
            position += len(token)
        return {"tokens": tokens, "token_logprobs": values,
                "top_logprobs": [{self.token(a): lp for a, lp in top} for top in tops] if self.reply.top else None,
                "text_offset": offsets}

    def choice(self, index: int, gen: Generation, alternatives: Alternatives | None) -> dict[str, Any]:
        choice: dict[str, Any] = {"index": index, "finish_reason": gen.finish_reason,
                                  "logprobs": self.logprobs(gen, alternatives)}
        if self.reply.chat:
            choice["message"] = {"role": "assistant", "content": gen.text}
        else:
            choice["text"] = gen.text
        return choice

    def usage(self, prompt_tokens: int, generations: list[Generation]) -> dict[str, int]:
        completion_tokens = sum(len(g.token_ids) for g in generations)
        return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                "total_tokens": prompt_tokens + completion_tokens}

    def body(self, generations: list[Generation], alternatives: list[Alternatives | None],
             prompt_tokens: int) -> dict[str, Any]:
        """The whole (non-streamed) response."""
        return {"id": self.id, "object": "chat.completion" if self.reply.chat else "text_completion",
                "created": self.created, "model": self.model_name,
                "choices": [self.choice(i, g, a) for i, (g, a) in enumerate(zip(generations, alternatives,
                                                                                  strict=True))],
                "usage": self.usage(prompt_tokens, generations)}

    def pieces(self, gen: Generation) -> list[str]:
        """The text cut into one piece per token (the pieces join to `gen.text` exactly), so each stream chunk
        carries one token's text and logprob; one piece for the whole text where the tokens do not spell it."""
        if self.tokenizer is None or not gen.token_ids:
            return [gen.text]
        pieces, before = [], ""
        for end in range(1, len(gen.token_ids) + 1):
            text = self.tokenizer.decode(gen.token_ids[:end], skip_special_tokens=True)
            if not text.startswith(before):
                return [gen.text]
            pieces.append(text[len(before):])
            before = text
        if not before.startswith(gen.text):
            return [gen.text]
        kept, length = [], 0
        for piece in pieces:  # the text may end early at a stop string: clip the pieces to it
            kept.append(piece[:max(0, len(gen.text) - length)])
            length += len(kept[-1])
        return kept

    def chunks(self, generations: list[Generation], alternatives: list[Alternatives | None],
               prompt_tokens: int) -> Iterator[dict[str, Any]]:
        """The stream: per choice, a chunk per token (its text and logprob), then one with the finish reason; a
        usage chunk with no choices when `stream_options.include_usage` is set."""
        kind = "chat.completion.chunk" if self.reply.chat else "text_completion"

        def chunk(choice: dict[str, Any]) -> dict[str, Any]:
            return {"id": self.id, "object": kind, "created": self.created, "model": self.model_name,
                    "choices": [choice]}

        for index, (gen, alts) in enumerate(zip(generations, alternatives, strict=True)):
            if self.reply.chat:
                yield chunk({"index": index, "delta": {"role": "assistant", "content": ""}, "logprobs": None,
                             "finish_reason": None})
            pieces = self.pieces(gen)
            for position, piece in enumerate(pieces):
                last = position == len(pieces) - 1
                stop = None if last else position + 1
                logprobs = self.logprobs(gen, alts, position if len(pieces) > 1 else 0, stop)
                yield chunk({"index": index, "logprobs": logprobs, "finish_reason": None,
                             **({"delta": {"content": piece}} if self.reply.chat else {"text": piece})})
            yield chunk({"index": index, "logprobs": None, "finish_reason": gen.finish_reason,
                         **({"delta": {}} if self.reply.chat else {"text": ""})})
        if self.reply.stream_usage:
            yield {"id": self.id, "object": kind, "created": self.created, "model": self.model_name, "choices": [],
                   "usage": self.usage(prompt_tokens, generations)}
