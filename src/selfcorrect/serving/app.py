"""`selfcorrect serve`: any selfcorrect `Backend` behind an OpenAI-compatible HTTP API, on FastAPI and uvicorn.

Why it exists beside `transformers serve` and `vllm serve`: it serves the `hf` backend, so on a CPU (or one GPU)
several processes share one loaded model and get what this project's metrics need, which transformers serve does
not give (it ignores `n` and `logprobs`, and its seed is global, not per request): `n` samples, per-request seeds
whose answers equal the `hf` backend's whatever else is in flight, logprobs and `top_logprobs`. For throughput on
GPUs, `vllm serve` is the server to use (docs/scale.md).

Endpoints: POST /v1/chat/completions and /v1/completions (`n`, `temperature`, `top_p`, `max_tokens`, `seed`, `stop`,
`logprobs`, `top_logprobs`, `stream`, a list of prompts for completions), GET /v1/models and /health. Concurrent
requests are decoded together (`Batcher`). `top_logprobs` come from one extra teacher-forced forward pass over the
prompt and the generated tokens (temperature 1, as the chosen tokens' logprobs), so they need a backend with a
model to run (the hf backend). `stream=True` is answered as server-sent events, one chunk per token, in the format
of OpenAI's stream; the backends decode in batches, so the chunks are sent once the completion is decoded, not as
each token is. There is no authentication: bind to 127.0.0.1 (the default) unless the network is trusted.

FastAPI and uvicorn are imported at the top: this module is imported only by `selfcorrect serve` and tests.
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import threading
import time
from collections.abc import AsyncIterator
from typing import Any

import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.exceptions import HTTPException

from selfcorrect.backends.base import Backend, Generation, GenerationRequest
from selfcorrect.errors import SelfCorrectError
from selfcorrect.serving.batcher import Batcher
from selfcorrect.serving.wire import DEFAULT_MAX_TOKENS, Alternatives, APIError, Reply, Writer, requests_from_body

logger = logging.getLogger(__name__)

MAX_BODY_BYTES = 16 * 1024 * 1024


class Service:
    """What the routes do: the backend (through its Batcher) and the name it serves the model under."""

    def __init__(self, backend: Backend, model_name: str, max_batch: int = 64,
                 default_max_tokens: int = DEFAULT_MAX_TOKENS) -> None:
        self.backend = backend
        self.model_name = model_name
        self.default_max_tokens = default_max_tokens
        self.batcher = Batcher(backend, max_batch=max_batch)
        self.created = int(time.time())

    def models(self) -> dict[str, Any]:
        return {"object": "list", "data": [{"id": self.model_name, "object": "model", "created": self.created,
                                            "owned_by": "selfcorrect"}]}

    async def complete(self, body: dict[str, Any], chat: bool) -> tuple[Writer, list[Generation],
                                                                         list[Alternatives | None], int]:
        """Answer one request body: (its writer, the generations in choice order, their top alternatives, the
        prompt's token count)."""
        if body.get("model") != self.model_name:
            raise APIError(404, f"the model {body.get('model')!r} does not exist; this server serves "
                                f"{self.model_name!r}", "not_found_error")
        requests = requests_from_body(body, chat, self.default_max_tokens)
        reply = Reply.from_body(body, chat)
        scorable = hasattr(self.backend, "model") and callable(getattr(self.backend, "prompt_ids", None))
        if reply.top and not scorable:
            raise APIError(400, f"top_logprobs need a model to run forward passes through; backend "
                                f"{self.backend.name!r} has none (serve with the hf backend)")
        try:
            generations = await asyncio.wrap_future(self.batcher.enqueue(requests))
        except (SelfCorrectError, ValueError) as exc:
            raise APIError(400, str(exc)) from None
        generations.sort(key=lambda g: (g.request_index, g.sample_index))
        alternatives: list[Alternatives | None] = [None] * len(generations)
        if reply.top:
            alternatives = await asyncio.wrap_future(self.batcher.call(
                lambda: self._alternatives(requests, generations, reply.top)))
        prompt_ids = getattr(self.backend, "prompt_ids", None)
        prompt_tokens = sum(len(prompt_ids(r)) for r in requests) if callable(prompt_ids) else 0
        writer = Writer(reply, self.model_name, getattr(self.backend, "tokenizer", None))
        return writer, generations, alternatives, prompt_tokens

    def _alternatives(self, requests: list[GenerationRequest], generations: list[Generation],
                      top: int) -> list[Alternatives | None]:
        """The top-`top` (token id, logprob) at each generated token, from one forward pass over all of them."""
        import torch

        from selfcorrect.backends.scoring import continuation_logprobs

        backend: Any = self.backend
        scored = [i for i, g in enumerate(generations) if g.token_ids]
        result: list[Alternatives | None] = [[] for _ in generations]
        if not scored:
            return result
        prompts = [backend.prompt_ids(requests[generations[i].request_index]) for i in scored]
        rows = continuation_logprobs(backend.model, prompts, [generations[i].token_ids for i in scored],
                                     backend.pad_id)
        for i, row in zip(scored, rows, strict=True):
            values, ids = torch.topk(row, min(top, row.shape[-1]), dim=-1)
            result[i] = [list(zip(t.tolist(), v.tolist(), strict=True)) for t, v in zip(ids, values, strict=True)]
        return result


def create_app(service: Service) -> Any:
    """The FastAPI app: every error, ours or the framework's (unknown route, wrong method), is OpenAI's
    {"error": {...}} body, so the official client raises its typed errors with the message."""
    app = FastAPI(title="selfcorrect serve", docs_url=None, redoc_url=None, openapi_url=None)

    @app.exception_handler(APIError)
    async def api_error(_request: Request, exc: APIError) -> JSONResponse:
        return JSONResponse(exc.body(), status_code=exc.status)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
        kind = "not_found_error" if exc.status_code == 404 else "invalid_request_error"
        message = f"no route {request.method} {request.url.path}" if exc.status_code in (404, 405) else exc.detail
        return JSONResponse(APIError(exc.status_code, str(message), kind).body(), status_code=exc.status_code)

    @app.exception_handler(Exception)
    async def server_error(request: Request, exc: Exception) -> JSONResponse:  # a bug or a backend failure
        logger.error("request to %s failed: %s: %s", request.url.path, type(exc).__name__, exc)
        return JSONResponse(APIError(500, f"{type(exc).__name__}: {exc}", "server_error").body(), status_code=500)

    async def read_body(request: Request) -> dict[str, Any]:
        raw = await request.body()
        if len(raw) > MAX_BODY_BYTES:
            raise APIError(413, f"request body over {MAX_BODY_BYTES} bytes")
        try:
            body = json.loads(raw or b"{}")
        except ValueError:
            raise APIError(400, "the request body is not valid JSON") from None
        if not isinstance(body, dict):
            raise APIError(400, "the request body must be a JSON object")
        return body

    async def answer(request: Request, chat: bool) -> Any:
        writer, generations, alternatives, prompt_tokens = await service.complete(await read_body(request), chat)
        if not writer.reply.stream:
            return JSONResponse(writer.body(generations, alternatives, prompt_tokens))

        async def events() -> AsyncIterator[str]:
            for chunk in writer.chunks(generations, alternatives, prompt_tokens):
                yield f"data: {json.dumps(chunk)}\n\n"
            yield "data: [DONE]\n\n"

        return StreamingResponse(events(), media_type="text/event-stream")

    @app.get("/health")
    @app.get("/v1/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        return service.models()

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request) -> Any:
        return await answer(request, chat=True)

    @app.post("/v1/completions")
    async def completions(request: Request) -> Any:
        return await answer(request, chat=False)

    return app


class Server:
    """uvicorn serving `service` on an already-bound socket (port 0 gives a free one: see `url`)."""

    def __init__(self, service: Service, sock: socket.socket) -> None:
        self.service = service
        self.socket = sock
        config = uvicorn.Config(create_app(service), log_level="warning", lifespan="off",
                                timeout_graceful_shutdown=5)
        self.uvicorn = uvicorn.Server(config)
        self._thread: threading.Thread | None = None

    @property
    def model_name(self) -> str:
        return self.service.model_name

    @property
    def url(self) -> str:
        host, port = self.socket.getsockname()[:2]
        return f"http://{host}:{port}/v1"

    def run(self) -> None:
        """Serve in this thread until Ctrl-C (uvicorn's own signal handling), then release everything."""
        try:
            self.uvicorn.run(sockets=[self.socket])
        finally:
            self.socket.close()
            self.service.batcher.close()

    def start(self) -> Server:
        """Serve from a background thread; returns once the server accepts connections."""
        self._thread = threading.Thread(target=self.run, name="selfcorrect-serve", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 30
        while not self.uvicorn.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise SelfCorrectError(f"selfcorrect serve did not start at {self.url}")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        """Stop a started server: new connections are refused once this returns."""
        self.uvicorn.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=30)


def make_server(backend: Backend, host: str = "127.0.0.1", port: int = 0, model_name: str | None = None,
                max_batch: int = 64, default_max_tokens: int = DEFAULT_MAX_TOKENS) -> Server:
    """A server for `backend` bound to (host, port); `start()` it in the background or `run()` it here."""
    try:
        sock = socket.create_server((host, port))
    except OSError as exc:
        raise SelfCorrectError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    return Server(Service(backend, model_name or backend.model_id, max_batch, default_max_tokens), sock)


def serve_model(model: str = "sandbox", host: str = "127.0.0.1", port: int = 8000,
                served_model_name: str | None = None, device: str = "cpu", dtype: str = "auto",
                max_batch: int = 64, batch_size: int = 256) -> None:
    """Load `model` with the hf backend (a built-in name, a folder or a hub id) and serve it until Ctrl-C.

    The model is served under `served_model_name`, by default the `model` argument as given, so clients pass the
    same string they would pass to `--model`.
    """
    from selfcorrect.backends.hf import HFBackend

    backend = HFBackend(model, device=device, dtype=dtype, batch_size=batch_size)
    server = make_server(backend, host, port, served_model_name or model, max_batch=max_batch)
    print(f"serving {server.model_name!r} at {server.url} (Ctrl-C to stop)", flush=True)
    server.run()
