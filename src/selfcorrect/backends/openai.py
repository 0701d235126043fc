"""The `openai` backend: any OpenAI-compatible server (vLLM serve, `selfcorrect serve`, transformers serve,
llama.cpp, Ollama, hosted APIs) through its chat or completions endpoint.

Why the standard library (urllib, a thread pool) and not the `openai` client: it adds no dependency, and a round is
one batch of independent requests, which a bounded pool of blocking calls sends as fast as the server can answer.
Each request goes out once with `n` samples and its own seed (`SamplingParams.to_openai`), so a server that honours
seeds (vLLM, `selfcorrect serve`) gives the same samples whatever else is in flight.

Failures are split in two. Connection errors, timeouts, 429 and 5xx are transient: retried with exponential backoff
and jitter (a 429's `Retry-After` is obeyed), and when the retries run out the run stops with ONE line that names
the server and the reason. Any other HTTP error is the user's to fix and stops at once with the server's own message.
Runs append finished chunks only, so `--resume` after a server outage continues where it stopped.

The API key is read from an environment variable and goes only into the Authorization header: never into logs,
error messages, cache keys (`model_id` is the model name alone) or run configs.

Logprobs are requested and parsed where the server returns them; where it does not (transformers serve ignores
the field), generations carry `token_logprobs=None` and `supports_logprobs` turns False, so a run can say so.
Servers that return tokens as `token_id:<id>` (vLLM's `return_tokens_as_token_ids`, passed via `extra_body`) also
fill `token_ids`.
"""

from __future__ import annotations

import json
import logging
import os
import random
import socket
import threading
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Sequence
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from typing import Any

from selfcorrect.backends.base import Backend, Generation, GenerationRequest, repeat_greedy
from selfcorrect.backends.scripted import truncate_at_stop
from selfcorrect.errors import SelfCorrectError

logger = logging.getLogger(__name__)

APIS = ("chat", "completions")
RETRY_STATUS = frozenset({408, 409, 425, 429, 500, 502, 503, 504})
MAX_BACKOFF_S = 30.0
_TOKEN_ID_PREFIX = "token_id:"


class _Transient(Exception):
    """A failure worth retrying; `reason` completes "cannot reach ... at URL: <reason>"-style messages."""

    def __init__(self, reason: str, retry_after: float | None = None, reached: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retry_after = retry_after
        self.reached = reached  # the server answered (with an HTTP error) rather than not answering at all


class _Rejected(SelfCorrectError):
    """A permanent HTTP error (4xx other than 408/409/425/429): the request itself must change."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


class _Cancelled(Exception):
    """Raised in a worker whose batch already failed elsewhere, so it stops retrying at once."""


def _one_line(text: str, limit: int = 300) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _display_url(url: str) -> str:
    """The URL without any user:password part, for messages."""
    parts = urllib.parse.urlsplit(url)
    host = parts.hostname or ""
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urllib.parse.urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def _server_message(body: bytes) -> str:
    """The human part of an error body: OpenAI's {"error": {"message"}}, vLLM's {"message"}, FastAPI's {"detail"}."""
    try:
        data = json.loads(body)
    except ValueError:
        return _one_line(body.decode("utf-8", "replace"))
    if isinstance(data, dict):
        error = data.get("error")
        for candidate in (error.get("message") if isinstance(error, dict) else error, data.get("message"),
                          data.get("detail")):
            if candidate:
                return _one_line(str(candidate))
    return _one_line(json.dumps(data))


def _retry_after(headers: Any) -> float | None:
    value = headers.get("Retry-After") if headers is not None else None
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None  # an HTTP date; plain backoff is close enough


def parse_logprobs(logprobs: Any, chat: bool) -> tuple[list[float] | None, list[int]]:
    """(token logprobs, token ids) from a choice's `logprobs`; (None, []) when the server sent none.

    Chat puts them in `logprobs.content[].logprob`, completions in `logprobs.token_logprobs`. Token ids are known
    only when every token is written `token_id:<id>`.
    """
    if not isinstance(logprobs, dict):
        return None, []
    if chat:
        entries = logprobs.get("content")
        if not isinstance(entries, list):
            return None, []
        values = [e.get("logprob") for e in entries]
        tokens = [e.get("token") for e in entries]
    else:
        values, tokens = logprobs.get("token_logprobs"), logprobs.get("tokens")
        if not isinstance(values, list):
            return None, []
    if any(not isinstance(v, int | float) for v in values):
        return None, []
    ids: list[int] = []
    if isinstance(tokens, list) and tokens and all(isinstance(t, str) and t.startswith(_TOKEN_ID_PREFIX)
                                                   for t in tokens):
        ids = [int(t[len(_TOKEN_ID_PREFIX):]) for t in tokens]
    return [float(v) for v in values], ids


class OpenAIBackend(Backend):
    """An OpenAI-compatible server at `base_url` (e.g. `http://127.0.0.1:8000/v1`) serving `model`.

    `api="chat"` sends chat messages to /chat/completions (the server applies its chat template). `api="completions"`
    sends raw text to /completions; chat messages are then rendered with the chat template of `tokenizer` (a local
    folder or hub id), as lm-eval's local-completions does. Raw-prompt requests always go to /completions.
    `max_concurrency` bounds requests in flight; `max_retries` and `backoff` (seconds, doubled per retry) bound how
    long a failing server is retried; `timeout` is per request. `logprobs=False` stops asking for logprobs (for
    servers that reject the field); `extra_body` is merged into every request (server-specific options).
    `check=True` probes the server once at construction, so a wrong URL fails in seconds, before any work.
    """

    name = "openai"
    supports_logprobs = True
    supports_hidden_states = False

    def __init__(self, model: str, base_url: str, api: str = "chat", api_key_env: str = "OPENAI_API_KEY",
                 max_concurrency: int = 8, max_retries: int = 5, timeout: float = 60.0, backoff: float = 0.5,
                 logprobs: bool = True, extra_body: dict[str, Any] | None = None, tokenizer: str | None = None,
                 check: bool = True) -> None:
        if api not in APIS:
            raise SelfCorrectError(f"openai backend: api must be one of {', '.join(APIS)}, got {api!r}")
        if not str(base_url).startswith(("http://", "https://")):
            raise SelfCorrectError(f"openai backend: base_url must start with http:// or https://, got {base_url!r} "
                                   "(e.g. http://127.0.0.1:8000/v1)")
        if max_concurrency < 1 or max_retries < 0 or timeout <= 0 or backoff < 0:
            raise SelfCorrectError("openai backend: max_concurrency must be >= 1, max_retries >= 0, timeout > 0 "
                                   "and backoff >= 0")
        self.model = str(model)
        self.base_url = str(base_url).rstrip("/")
        self.api = api
        self.api_key_env = api_key_env
        self._api_key = os.environ.get(api_key_env) or None
        self.max_concurrency = max_concurrency
        self.max_retries = max_retries
        self.timeout = float(timeout)
        self.backoff = float(backoff)
        self.request_logprobs = logprobs
        self.extra_body = dict(extra_body or {})
        self.tokenizer_source = tokenizer
        self._tokenizer: Any = None
        self.supports_logprobs = logprobs
        self.usage = {"requests": 0, "retries": 0, "prompt_tokens": 0, "completion_tokens": 0}
        self._lock = threading.Lock()
        if check:
            self.check_server()

    @property
    def model_id(self) -> str:
        """The served model's name: the same model behind another URL or key shares cache entries (as in DSPy)."""
        return self.model

    @property
    def where(self) -> str:
        return _display_url(self.base_url)

    def payload(self, request: GenerationRequest) -> tuple[str, dict[str, Any]]:
        """(endpoint path, JSON body) for one request: the whole translation from our types to the wire."""
        body: dict[str, Any] = {"model": self.model, **request.params.to_openai()}
        if request.messages is not None and self.api == "chat":
            body["messages"] = request.messages
            if self.request_logprobs:
                body["logprobs"] = True
            return "/chat/completions", {**body, **self.extra_body}
        body["prompt"] = request.prompt if request.messages is None else self.render(request.messages)
        if self.request_logprobs:
            body["logprobs"] = 1  # the legacy field's count of alternatives; 1 is accepted everywhere (0 is not)
        return "/completions", {**body, **self.extra_body}

    def render(self, messages: list[dict[str, str]]) -> str:
        """Chat messages as one prompt string through `tokenizer`'s chat template (api="completions")."""
        if self.tokenizer_source is None:
            raise SelfCorrectError("openai backend: api='completions' needs tokenizer= (a folder or hub id whose "
                                   "chat template turns chat messages into a prompt), or use api='chat'")
        with self._lock:
            if self._tokenizer is None:
                from transformers import AutoTokenizer

                try:
                    self._tokenizer = AutoTokenizer.from_pretrained(self.tokenizer_source)
                except (OSError, ValueError) as exc:
                    raise SelfCorrectError(f"openai backend: cannot load tokenizer {self.tokenizer_source!r}: "
                                           f"{_one_line(str(exc), 200)}") from None
        if not self._tokenizer.chat_template:
            return "\n".join(m["content"] for m in messages)
        return self._tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)

    def _headers(self) -> dict[str, str]:
        headers = {"Content-Type": "application/json", "Accept": "application/json", "User-Agent": "selfcorrect"}
        if self._api_key:
            headers["Authorization"] = f"Bearer {self._api_key}"
        return headers

    def _scrub(self, text: str) -> str:
        """Never let the key through, even if a server echoes it back."""
        return text.replace(self._api_key, "***") if self._api_key else text

    def _send_once(self, path: str, body: dict[str, Any] | None) -> dict[str, Any]:
        """One HTTP exchange. Transient failures raise `_Transient`; permanent ones a `SelfCorrectError`."""
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.base_url + path, data=data, headers=self._headers(),
                                         method="GET" if body is None else "POST")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                raw = response.read()
        except urllib.error.HTTPError as exc:
            message = self._scrub(_server_message(exc.read() or b""))
            if exc.code in RETRY_STATUS:
                raise _Transient(f"HTTP {exc.code} {message}", _retry_after(exc.headers), reached=True) from None
            hint = ""
            if exc.code in (401, 403):
                hint = f"; set {self.api_key_env} to a valid key"
            elif exc.code == 404 and not self.base_url.endswith("/v1"):
                hint = " (OpenAI-compatible servers usually want a base_url ending in /v1)"
            raise _Rejected(f"OpenAI-compatible server at {self.where} rejected {path}: HTTP {exc.code} "
                            f"{message}{hint}", exc.code) from None
        except urllib.error.URLError as exc:
            reason = exc.reason
            if isinstance(reason, socket.gaierror):
                raise SelfCorrectError(f"cannot reach OpenAI-compatible server at {self.where}: unknown host "
                                       f"{urllib.parse.urlsplit(self.base_url).hostname!r}") from None
            raise _Transient(self._describe(reason)) from None
        except (OSError, ValueError) as exc:  # timeouts while reading, resets, truncated responses
            raise _Transient(self._describe(exc)) from None
        try:
            return json.loads(raw)
        except ValueError:
            raise SelfCorrectError(f"OpenAI-compatible server at {self.where} answered {path} with something "
                                   f"that is not JSON: {_one_line(raw.decode('utf-8', 'replace'), 80)!r}") from None

    def _describe(self, reason: object) -> str:
        if isinstance(reason, ConnectionRefusedError):
            return "connection refused"
        if isinstance(reason, TimeoutError | socket.timeout):
            return f"no answer within {self.timeout:g} s (raise backend_options.timeout or lower max_concurrency)"
        if isinstance(reason, ConnectionError):
            return "connection lost"
        return self._scrub(_one_line(str(reason) or type(reason).__name__, 120))

    def _send(self, path: str, body: dict[str, Any] | None, cancel: threading.Event | None = None,
              retries: int | None = None, probe: bool = False) -> dict[str, Any]:
        """`_send_once` with retries: exponential backoff with full jitter, never past MAX_BACKOFF_S a wait.

        `probe=True` returns {} as soon as the server answers at all, even with an error status.
        """
        retries = self.max_retries if retries is None else retries
        cancel = cancel or threading.Event()
        for attempt in range(retries + 1):
            if cancel.is_set():
                raise _Cancelled
            try:
                return self._send_once(path, body)
            except _Transient as exc:
                if probe and exc.reached:
                    return {}
                if attempt == retries:
                    if exc.reached:
                        raise SelfCorrectError(f"OpenAI-compatible server at {self.where} kept failing on {path}: "
                                               f"{exc.reason} (after {retries} retries)") from None
                    raise SelfCorrectError(f"cannot reach OpenAI-compatible server at {self.where}: {exc.reason} "
                                           f"(after {retries} retries)") from None
                delay = exc.retry_after if exc.retry_after is not None else \
                    self.backoff * (2 ** attempt) * random.uniform(0.5, 1.0)
                with self._lock:
                    self.usage["retries"] += 1
                if cancel.wait(min(delay, MAX_BACKOFF_S)):
                    raise _Cancelled from None
        raise AssertionError("unreachable")

    def check_server(self) -> None:
        """GET /models with at most 2 retries, so a wrong URL fails in seconds. Any HTTP answer means a server is
        there (transformers serve answers 500 without an HF cache dir); only no answer at all, or a refused key, is
        an error. A model the server does not list is only warned about: some servers accept unlisted aliases."""
        try:
            listing = self._send("/models", None, retries=min(self.max_retries, 2), probe=True)
        except _Rejected as exc:
            if exc.status in (401, 403):
                raise
            return
        data = listing.get("data") if isinstance(listing, dict) else None
        served = [m.get("id") for m in data if isinstance(m, dict)] if isinstance(data, list) else []
        if served and self.model not in served:
            logger.warning("server at %s lists %s, not %r; requests may be refused", self.where,
                           ", ".join(map(str, served[:5])), self.model)

    def parse(self, request: GenerationRequest, response: dict[str, Any], chat: bool) -> list[Generation]:
        """One response's choices as Generations, ordered by choice index (request_index left 0); a greedy request
        asked for one choice, repeated here to its n samples."""
        choices = response.get("choices") if isinstance(response, dict) else None
        if not isinstance(choices, list) or len(choices) != request.params.draws:
            count = len(choices) if isinstance(choices, list) else 0
            raise SelfCorrectError(f"OpenAI-compatible server at {self.where} returned {count} choice(s) for "
                                   f"n={request.params.draws}; it may not support n > 1 (use n=1 or another server)")
        generations = []
        for sample_index, choice in enumerate(sorted(choices, key=lambda c: c.get("index", 0))):
            text = (choice.get("message") or {}).get("content") if chat else choice.get("text")
            text = text or ""
            cut = truncate_at_stop(text, request.params.stop)  # for servers that ignore `stop`
            finish = "length" if choice.get("finish_reason") == "length" and cut == text else "stop"
            logprobs, token_ids = parse_logprobs(choice.get("logprobs"), chat)
            generations.append(Generation(text=cut, finish_reason=finish, token_ids=token_ids,
                                          token_logprobs=logprobs, sample_index=sample_index))
        usage = response.get("usage") if isinstance(response.get("usage"), dict) else {}
        with self._lock:
            self.usage["requests"] += 1
            self.usage["prompt_tokens"] += int(usage.get("prompt_tokens") or 0)
            self.usage["completion_tokens"] += int(usage.get("completion_tokens") or 0)
            if self.supports_logprobs and any(g.token_logprobs is None for g in generations):
                self.supports_logprobs = False
                logger.warning("server at %s returned no logprobs; logprob-based metrics will be missing",
                               self.where)
        return repeat_greedy(generations, request.params)

    def generate(self, requests: Sequence[GenerationRequest]) -> list[Generation]:
        if any(r.hidden_layers for r in requests):
            raise SelfCorrectError("openai backend: hidden states are not available through a server API; "
                                   "use the hf backend for hidden-state probes")
        if not requests:
            return []
        cancel = threading.Event()

        def one(request: GenerationRequest) -> list[Generation]:
            path, body = self.payload(request)
            return self.parse(request, self._send(path, body, cancel), chat=path == "/chat/completions")

        pool = ThreadPoolExecutor(max_workers=min(self.max_concurrency, len(requests)),
                                  thread_name_prefix="selfcorrect-openai")
        futures = [pool.submit(one, r) for r in requests]
        try:
            wait(futures, return_when=FIRST_EXCEPTION)
            failed = [f for f in futures if f.done() and f.exception() is not None]
            if failed:
                raise failed[0].exception()  # type: ignore[misc]
            results = [f.result() for f in futures]
        except BaseException:
            cancel.set()  # workers stop retrying; the first error is the one reported
            pool.shutdown(wait=False, cancel_futures=True)
            raise
        pool.shutdown(wait=True)
        generations = []
        for request_index, samples in enumerate(results):
            for gen in samples:
                gen.request_index = request_index
                generations.append(gen)
        return generations
