"""An OpenAI-compatible HTTP server over any selfcorrect `Backend`: `python -m selfcorrect.serve --model DIR`.

Why it exists: it lets several processes (an eval, a notebook, lm-eval's local-completions) share one loaded model,
and it is the real server the `openai` backend is tested against on loopback. It uses only the standard library
(`ThreadingHTTPServer`), so it runs wherever selfcorrect does.

Endpoints: POST /v1/chat/completions and /v1/completions (`n`, `temperature`, `top_p`, `max_tokens`, `seed`, `stop`,
`logprobs`; a list of prompts for completions), GET /v1/models and /health. Streaming is refused with a clear 400.

Concurrent requests are batched: handler threads queue their requests and ONE worker thread sends whatever is
queued to `backend.generate` in a single call (the hf backend decodes them together). Each request keeps its own
`seed`, and the hf backend's samples do not depend on their batch mates, so a request answered here equals the
same request sent to the backend directly, greedy or sampled. A request without a seed gets a random one, as on
other servers. If a batch fails, its requests are retried one by one so only the faulty one gets the error.

Logprobs are those the backend returns (hf: of the raw distribution at temperature 1); `top_logprobs` lists are
left empty. Tokens are written as text, or as `token_id:<id>` when `return_tokens_as_token_ids` is set (vLLM's
extension). There is no authentication: bind to 127.0.0.1 (the default) unless the network is trusted.
"""

from __future__ import annotations

import argparse
import json
import logging
import queue
import secrets
import sys
import threading
import time
import uuid
from collections.abc import Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from selfcorrect.backends.base import Backend, Generation, GenerationRequest, SamplingParams
from selfcorrect.errors import SelfCorrectError

logger = logging.getLogger(__name__)

MAX_BODY_BYTES = 16 * 1024 * 1024
DEFAULT_MAX_TOKENS = 256


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
    """OpenAI request fields -> our SamplingParams (OpenAI's defaults: temperature 1, top_p 1, n 1)."""
    if body.get("stream"):
        raise APIError(400, "streaming is not supported by selfcorrect serve; send stream=false")
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


@dataclass
class _Job:
    requests: list[GenerationRequest]
    future: Future


class Batcher:
    """Sends everything queued to the backend in one `generate` call, from one worker thread.

    One worker also means the backend is never called from two threads at once (torch models are not re-entrant).
    The worker takes every request already queued; if that found more than one (the server is under load), it
    keeps collecting while requests keep arriving (gaps under `gap_s`, at most `max_wait_s` in all, at most
    `max_batch` requests), since the next requests of a busy client pool arrive as a burst over a few milliseconds.
    """

    def __init__(self, backend: Backend, max_batch: int = 64, gap_s: float = 0.01, max_wait_s: float = 0.05) -> None:
        self.backend = backend
        self.max_batch = max_batch
        self.gap_s = gap_s
        self.max_wait_s = max_wait_s
        self.batches: list[int] = []  # requests per backend call, for tests and benchmarks
        self._queue: queue.Queue[_Job | None] = queue.Queue()
        self._worker = threading.Thread(target=self._run, name="selfcorrect-serve-batcher", daemon=True)
        self._worker.start()

    def submit(self, requests: list[GenerationRequest]) -> list[Generation]:
        """Answer `requests` (blocking), as part of whatever batch they end up in."""
        job = _Job(requests, Future())
        self._queue.put(job)
        return job.future.result()

    def close(self) -> None:
        self._queue.put(None)
        self._worker.join(timeout=30)

    def _run(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                return
            jobs, size = [first], len(first.requests)
            deadline = time.monotonic() + self.max_wait_s
            while size < self.max_batch:
                # Wait for company only under load (something already queued with the first): a lone client
                # never pays the gap.
                wait_s = min(self.gap_s, deadline - time.monotonic()) if len(jobs) > 1 else 0.0
                try:
                    job = self._queue.get(timeout=wait_s) if wait_s > 0 else self._queue.get_nowait()
                except queue.Empty:
                    break
                if job is None:
                    self._queue.put(None)  # finish this batch, then stop
                    break
                jobs.append(job)
                size += len(job.requests)
            self._answer(jobs)

    def _answer(self, jobs: list[_Job]) -> None:
        try:
            outputs = self._generate([r for job in jobs for r in job.requests])
        except Exception as exc:
            if len(jobs) == 1:
                jobs[0].future.set_exception(exc)
                return
            for job in jobs:  # isolate the faulty request
                self._answer([job])
            return
        offset = 0
        for job in jobs:
            mine = [g for g in outputs if offset <= g.request_index < offset + len(job.requests)]
            for gen in mine:
                gen.request_index -= offset
            offset += len(job.requests)
            job.future.set_result(mine)

    def _generate(self, requests: Sequence[GenerationRequest]) -> list[Generation]:
        self.batches.append(len(requests))
        return self.backend.generate(requests)


class OpenAIServer(ThreadingHTTPServer):
    """The HTTP server: holds the backend (through its Batcher) and the name it serves the model under."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], backend: Backend, model_name: str, max_batch: int = 64,
                 default_max_tokens: int = DEFAULT_MAX_TOKENS) -> None:
        super().__init__(address, _Handler)
        self.backend = backend
        self.model_name = model_name
        self.default_max_tokens = default_max_tokens
        self.batcher = Batcher(backend, max_batch=max_batch)
        self.created = int(time.time())

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host}:{port}/v1"

    def stop(self) -> None:
        """Stop `serve_forever` (which must be running) and close the listening socket, so new connections are
        refused; then stop the batcher."""
        self.shutdown()
        self.server_close()
        self.batcher.close()

    def complete(self, body: dict[str, Any], chat: bool) -> dict[str, Any]:
        """One OpenAI request body -> its response body."""
        if body.get("model") != self.model_name:
            raise APIError(404, f"the model {body.get('model')!r} does not exist; this server serves "
                                f"{self.model_name!r}", "not_found_error")
        requests = requests_from_body(body, chat, self.default_max_tokens)
        try:
            generations = self.batcher.submit(requests)
        except (SelfCorrectError, ValueError) as exc:
            raise APIError(400, str(exc)) from None
        as_ids = bool(body.get("return_tokens_as_token_ids"))
        want_logprobs = bool(body.get("logprobs")) if chat else body.get("logprobs") is not None
        prompt_ids = getattr(self.backend, "prompt_ids", None)
        choices = []
        for gen in generations:
            index = gen.request_index * requests[0].params.n + gen.sample_index
            logprobs = self._logprobs(gen, chat, as_ids) if want_logprobs else None
            choice: dict[str, Any] = {"index": index, "finish_reason": gen.finish_reason, "logprobs": logprobs}
            if chat:
                choice["message"] = {"role": "assistant", "content": gen.text}
            else:
                choice["text"] = gen.text
            choices.append(choice)
        prompt_tokens = sum(len(prompt_ids(r)) for r in requests) if callable(prompt_ids) else 0
        completion_tokens = sum(len(g.token_ids) for g in generations)
        return {"id": f"{'chatcmpl' if chat else 'cmpl'}-{uuid.uuid4().hex}",
                "object": "chat.completion" if chat else "text_completion", "created": int(time.time()),
                "model": self.model_name, "choices": choices,
                "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                          "total_tokens": prompt_tokens + completion_tokens}}

    def _logprobs(self, gen: Generation, chat: bool, as_ids: bool) -> dict[str, Any] | None:
        if gen.token_logprobs is None:
            return None
        tokenizer = getattr(self.backend, "tokenizer", None)
        if as_ids or tokenizer is None or len(gen.token_ids) != len(gen.token_logprobs):
            tokens = [f"token_id:{i}" for i in gen.token_ids]
        else:
            tokens = tokenizer.batch_decode([[i] for i in gen.token_ids])
        if chat:
            return {"content": [{"token": t, "logprob": v, "bytes": list(t.encode()), "top_logprobs": []}
                                for t, v in zip(tokens, gen.token_logprobs, strict=False)]}
        offsets, position = [], 0
        for token in tokens:
            offsets.append(position)
            position += len(token)
        return {"tokens": tokens, "token_logprobs": gen.token_logprobs, "top_logprobs": None,
                "text_offset": offsets}

    def models(self) -> dict[str, Any]:
        return {"object": "list", "data": [{"id": self.model_name, "object": "model", "created": self.created,
                                            "owned_by": "selfcorrect"}]}


class _Handler(BaseHTTPRequestHandler):
    server: OpenAIServer
    protocol_version = "HTTP/1.1"  # keep-alive for clients that reuse connections

    def log_message(self, format: str, *args: Any) -> None:
        logger.debug("%s " + format, self.address_string(), *args)

    def _reply(self, status: int, payload: dict[str, Any]) -> None:
        data = json.dumps(payload).encode()
        if status >= 400:
            self.close_connection = True  # an unread request body must not be parsed as the next request
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0].rstrip("/")
        if path in ("/health", "/v1/health"):
            self._reply(200, {"status": "ok"})
        elif path == "/v1/models":
            self._reply(200, self.server.models())
        else:
            self._reply(404, APIError(404, f"no route GET {path}", "not_found_error").body())

    def do_POST(self) -> None:
        path = self.path.split("?", 1)[0].rstrip("/")
        try:
            if path not in ("/v1/chat/completions", "/v1/completions"):
                raise APIError(404, f"no route POST {path}", "not_found_error")
            self._reply(200, self.server.complete(self._body(), chat=path == "/v1/chat/completions"))
        except APIError as exc:
            self._reply(exc.status, exc.body())
        except Exception as exc:  # a bug or a backend failure: the client may retry a 500
            logger.exception("request to %s failed", path)
            self._reply(500, APIError(500, f"{type(exc).__name__}: {exc}", "server_error").body())

    def _body(self) -> dict[str, Any]:
        length = self.headers.get("Content-Length", "")
        if not length.isdigit():
            raise APIError(411, "a numeric Content-Length header is required")
        if int(length) > MAX_BODY_BYTES:
            raise APIError(413, f"request body over {MAX_BODY_BYTES} bytes")
        try:
            body = json.loads(self.rfile.read(int(length)) or b"{}")
        except ValueError:
            raise APIError(400, "the request body is not valid JSON") from None
        if not isinstance(body, dict):
            raise APIError(400, "the request body must be a JSON object")
        return body


def make_server(backend: Backend, host: str = "127.0.0.1", port: int = 0, model_name: str | None = None,
                max_batch: int = 64, default_max_tokens: int = DEFAULT_MAX_TOKENS) -> OpenAIServer:
    """A server bound to (host, port) (port 0: a free one, see `.url`); run it with `serve_forever()`."""
    try:
        return OpenAIServer((host, port), backend, model_name or backend.model_id, max_batch=max_batch,
                            default_max_tokens=default_max_tokens)
    except OSError as exc:
        raise SelfCorrectError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None


def serve_model(model: str = "sandbox", host: str = "127.0.0.1", port: int = 8000,
                served_model_name: str | None = None, device: str = "cpu", dtype: str = "float32",
                max_batch: int = 64, batch_size: int = 256) -> None:
    """Load `model` with the hf backend (`sandbox` = the cached sandbox model) and serve it until Ctrl-C.

    The model is served under `served_model_name`, by default the `model` argument as given, so clients pass the
    same string they would pass to `--model`.
    """
    from selfcorrect.backends.hf import HFBackend
    from selfcorrect.models import resolve_model

    backend = HFBackend(str(resolve_model(model)), device=device, dtype=dtype, batch_size=batch_size)
    server = make_server(backend, host, port, served_model_name or model, max_batch=max_batch)
    print(f"serving {server.model_name!r} at {server.url} (Ctrl-C to stop)", flush=True)
    try:
        server.serve_forever(poll_interval=0.2)
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
        server.batcher.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m selfcorrect.serve", description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="sandbox", help="model folder, hub id, or `sandbox` (default)")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default: loopback only)")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--served-model-name", help="the name clients use (default: --model as given)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--max-batch", type=int, default=64, help="most requests decoded in one backend call")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        serve_model(args.model, args.host, args.port, args.served_model_name, args.device, args.dtype,
                    args.max_batch)
    except SelfCorrectError as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)
        return exc.exit_code
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
