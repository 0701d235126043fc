"""The `openai` backend: any OpenAI-compatible server (vLLM serve, `selfcorrect serve`, transformers serve,
llama.cpp, Ollama, hosted APIs) through its chat or completions endpoint, with the official `openai` package.

Why the package: it is what the field uses, so its retries (connection errors, timeouts, 408, 409, 429 and 5xx,
exponential backoff with jitter, `Retry-After` obeyed), timeouts and typed errors are the ones every server is
tested against. A round is one batch of independent requests: they go out through `AsyncOpenAI` on a private event
loop, at most `max_concurrency` in flight (a semaphore), and the first request that fails for good cancels the
rest. Each request goes out once with `n` samples and its own seed (`SamplingParams.to_openai`), so a server that
honours seeds (vLLM, `selfcorrect serve`) gives the same samples whatever else is in flight.

When the package's retries run out, or the server rejects a request (4xx other than 408/409/429), the run stops
with ONE line that names the server and the reason (the server's own message). Runs append finished chunks only,
so `--resume` after a server outage continues where it stopped.

The API key is read from an environment variable and handed only to the client, which sends it as a Bearer token:
never into logs, error messages, cache keys (`model_id` is the model name alone) or run configs. Without a key the
client sends the placeholder `EMPTY`, as vLLM's docs do; servers without authentication ignore it.

What a server does not give is found out, not assumed, and `capabilities()` says so for the run's summary (each
finding is also logged once): logprobs (transformers serve ignores the field: generations then carry
`token_logprobs=None` and `supports_logprobs` turns False), and seeds (the first seeded sampled request is sent
again, then with another seed: the same text, then a different one, mean seeds hold). Servers that return
tokens as `token_id:<id>` (vLLM's `return_tokens_as_token_ids`, passed via `extra_body`) also fill `token_ids`.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
from collections.abc import Coroutine, Sequence
from dataclasses import replace
from typing import Any

from selfcorrect.backends.base import Backend, Generation, GenerationRequest, repeat_greedy
from selfcorrect.backends.openai_errors import Server, one_line
from selfcorrect.backends.scripted import truncate_at_stop
from selfcorrect.errors import SelfCorrectError

logger = logging.getLogger(__name__)

APIS = ("chat", "completions")
_TOKEN_ID_PREFIX = "token_id:"
_NO_KEY = "EMPTY"


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
    `max_concurrency` bounds requests in flight; `max_retries` is the `openai` client's (transient failures only);
    `timeout` is per request. `logprobs=False` stops asking for logprobs (for servers that reject the field);
    `extra_body` is merged into every request (server-specific options). `check=True` probes the server once at
    construction, so a wrong URL fails in seconds, before any work.
    """

    name = "openai"
    supports_logprobs = True
    supports_hidden_states = False

    def __init__(self, model: str, base_url: str, api: str = "chat", api_key_env: str = "OPENAI_API_KEY",
                 max_concurrency: int = 8, max_retries: int = 5, timeout: float = 60.0, logprobs: bool = True,
                 extra_body: dict[str, Any] | None = None, tokenizer: str | None = None, check: bool = True) -> None:
        if api not in APIS:
            raise SelfCorrectError(f"openai backend: api must be one of {', '.join(APIS)}, got {api!r}")
        if not str(base_url).startswith(("http://", "https://")):
            raise SelfCorrectError(f"openai backend: base_url must start with http:// or https://, got {base_url!r} "
                                   "(e.g. http://127.0.0.1:8000/v1)")
        if max_concurrency < 1 or max_retries < 0 or timeout <= 0:
            raise SelfCorrectError("openai backend: max_concurrency must be >= 1, max_retries >= 0 and timeout > 0")
        self.model = str(model)
        self.base_url = str(base_url).rstrip("/")
        self.api = api
        self.api_key_env = api_key_env
        self.max_concurrency = max_concurrency
        self.max_retries = max_retries
        self.timeout = float(timeout)
        self.server = Server(self.base_url, api_key_env, self.timeout)
        self.request_logprobs = logprobs
        self.extra_body = dict(extra_body or {})
        self.tokenizer_source = tokenizer
        self._tokenizer: Any = None
        self.supports_logprobs = logprobs
        self.seeds: str | None = None  # what the seed check found; None until a seeded sampled request went out
        self.usage = {"requests": 0, "retries": 0, "prompt_tokens": 0, "completion_tokens": 0}
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._client: Any = None
        if check:
            self.check_server()

    @property
    def model_id(self) -> str:
        """The served model's name: the same model behind another URL or key shares cache entries (as in DSPy)."""
        return self.model

    @property
    def where(self) -> str:
        return self.server.where

    def capabilities(self) -> dict[str, str]:
        """What this server was found to give, for the run's summary."""
        if not self.request_logprobs:
            logprobs = "not requested (logprobs: false)"
        elif self.usage["requests"] == 0:
            logprobs = "not checked (no request answered yet)"
        else:
            logprobs = "returned" if self.supports_logprobs else "not returned by the server"
        return {"server": self.where, "logprobs": logprobs,
                "seeds": self.seeds or "not checked (no seeded sampled request)"}

    # -- the wire -------------------------------------------------------------------------------------------------

    def payload(self, request: GenerationRequest) -> tuple[str, dict[str, Any]]:
        """(endpoint path, keyword arguments of the client's `create`) for one request: the whole translation from
        our types to the wire. Server-specific options travel as `extra_body`."""
        body: dict[str, Any] = {"model": self.model, **request.params.to_openai()}
        if self.extra_body:
            body["extra_body"] = dict(self.extra_body)
        if request.messages is not None and self.api == "chat":
            body["messages"] = request.messages
            if self.request_logprobs:
                body["logprobs"] = True
            return "/chat/completions", body
        body["prompt"] = request.prompt if request.messages is None else self.render(request.messages)
        if self.request_logprobs:
            body["logprobs"] = 1  # the legacy field's count of alternatives; 1 is accepted everywhere (0 is not)
        return "/completions", body

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
                                           f"{one_line(str(exc), 200)}") from None
        if not self._tokenizer.chat_template:
            return "\n".join(m["content"] for m in messages)
        return self._tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)

    def _error(self, exc: Exception, path: str, retries: int | None = None) -> SelfCorrectError:
        return self.server.failure(exc, path, self.max_retries if retries is None else retries)

    # -- the event loop the client runs on ------------------------------------------------------------------------

    def _run(self, work: Coroutine[Any, Any, Any]) -> Any:
        """Run `work` on this backend's own event loop (a daemon thread), so `generate` stays a plain call from any
        thread, a notebook's running loop included. Ctrl-C or any error here cancels what is still in flight."""
        with self._lock:
            if self._loop is None:
                self._loop = asyncio.new_event_loop()
                self._thread = threading.Thread(target=self._loop.run_forever, name="selfcorrect-openai",
                                                daemon=True)
                self._thread.start()
        future = asyncio.run_coroutine_threadsafe(work, self._loop)
        try:
            return future.result()
        except BaseException:
            future.cancel()
            raise

    def _async_client(self) -> Any:
        """The `AsyncOpenAI` client, made on the loop's thread on first use."""
        if self._client is None:
            from openai import AsyncOpenAI

            self._client = AsyncOpenAI(base_url=self.base_url, api_key=os.environ.get(self.api_key_env) or _NO_KEY,
                                       max_retries=self.max_retries, timeout=self.timeout)
        return self._client

    def close(self) -> None:
        if self._loop is None:
            return
        if self._client is not None:
            self._run(self._client.close())
            self._client = None
        self._loop.call_soon_threadsafe(self._loop.stop)
        if self._thread is not None:
            self._thread.join(timeout=10)
        self._loop.close()
        self._loop = self._thread = None

    # -- requests -------------------------------------------------------------------------------------------------

    def check_server(self) -> None:
        """GET /models with at most 2 retries, so a wrong URL fails in seconds. Any HTTP answer means a server is
        there (transformers serve may answer 500 for a listing it cannot build offline); only no answer at all,
        or a refused key, is an error. A model the server does not list is only warned about: some servers
        accept unlisted aliases."""
        self._run(self._check())

    async def _check(self) -> None:
        import openai

        retries = min(self.max_retries, 2)
        try:
            listing = await self._async_client().with_options(max_retries=retries).models.list()
        except openai.APIStatusError as exc:
            if exc.status_code in (401, 403):
                raise self._error(exc, "/models") from None
            return
        except openai.APIError as exc:
            raise self._error(exc, "/models", retries) from None
        served = [getattr(m, "id", None) for m in getattr(listing, "data", None) or []]
        if served and self.model not in served:
            logger.warning("server at %s lists %s, not %r; requests may be refused", self.where,
                           ", ".join(map(str, served[:5])), self.model)

    async def _send(self, request: GenerationRequest) -> tuple[dict[str, Any], bool]:
        """One request through the client: (the response as a plain dict, whether it was a chat completion)."""
        import openai

        path, body = self.payload(request)
        client = self._async_client()
        endpoint = client.chat.completions if path == "/chat/completions" else client.completions
        try:
            raw = await endpoint.with_raw_response.create(**body)
            completion = raw.parse()
        except openai.APIError as exc:
            raise self._error(exc, path) from None
        except ValueError as exc:  # a 200 whose body is not JSON
            raise SelfCorrectError(f"OpenAI-compatible server at {self.where} answered {path} with something "
                                   f"that is not JSON: {one_line(str(exc), 80)}") from None
        with self._lock:
            self.usage["retries"] += raw.retries_taken
        response = completion.to_dict() if hasattr(completion, "to_dict") else completion
        return response if isinstance(response, dict) else {}, path == "/chat/completions"

    def parse(self, request: GenerationRequest, response: dict[str, Any], chat: bool) -> list[Generation]:
        """One response's choices as Generations, ordered by choice index (request_index left 0); a greedy request
        asked for one choice, repeated here to its n samples."""
        choices = response.get("choices") if isinstance(response, dict) else None
        if not isinstance(choices, list) or len(choices) != request.params.draws:
            count = len(choices) if isinstance(choices, list) else 0
            raise SelfCorrectError(f"OpenAI-compatible server at {self.where} returned {count} choice(s) for "
                                   f"n={request.params.draws}; it may not support n > 1 (use n=1 or another server)")
        generations = []
        for sample_index, choice in enumerate(sorted(choices, key=lambda c: c.get("index") or 0)):
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

    async def _answer(self, request: GenerationRequest, slots: asyncio.Semaphore) -> list[Generation]:
        async with slots:
            response, chat = await self._send(request)
        return self.parse(request, response, chat)

    async def _answer_all(self, requests: Sequence[GenerationRequest]) -> list[list[Generation]]:
        """Every request, at most `max_concurrency` in flight; the first failure cancels the others."""
        slots = asyncio.Semaphore(self.max_concurrency)
        tasks = [asyncio.ensure_future(self._answer(r, slots)) for r in requests]
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
            for task in tasks:
                if task.done() and task.exception() is not None:
                    raise task.exception()  # type: ignore[misc]
            results = [task.result() for task in tasks]
        finally:
            for task in tasks:
                task.cancel()
        if self.seeds is None:
            await self._check_seeds(requests, results)
        return results

    async def _check_seeds(self, requests: Sequence[GenerationRequest], results: list[list[Generation]]) -> None:
        """Send the first seeded sampled request again, then with another seed: the same texts, then different
        ones, mean the server honours seeds. Logged once where they do not hold."""
        sampled = [i for i, r in enumerate(requests) if not r.params.greedy]
        if not sampled:
            return
        request = requests[sampled[0]]
        texts = [g.text for g in results[sampled[0]]]
        another = replace(request, params=replace(request.params, seed=(request.params.seed + 1) % 2 ** 63))
        if await self._texts(request) != texts:
            self.seeds = "ignored (the same seeded request, sent twice, gave different texts)"
        elif await self._texts(another) == texts:
            self.seeds = ("no sampling seen (another seed gave the same text too: the server may not sample, or "
                          "the model is very sure)")
        else:
            self.seeds = "honoured (the same seed gave the same text, another seed a different one)"
            return
        logger.warning("server at %s: seeds %s; sampled results may not repeat", self.where, self.seeds)

    async def _texts(self, request: GenerationRequest) -> list[str]:
        return [g.text for g in self.parse(request, *await self._send(request))]

    def generate(self, requests: Sequence[GenerationRequest]) -> list[Generation]:
        if any(r.hidden_layers for r in requests):
            raise SelfCorrectError("openai backend: hidden states are not available through a server API; "
                                   "use the hf backend for hidden-state probes")
        if not requests:
            return []
        results = self._run(self._answer_all(requests))
        generations = []
        for request_index, samples in enumerate(results):
            for gen in samples:
                gen.request_index = request_index
                generations.append(gen)
        return generations
