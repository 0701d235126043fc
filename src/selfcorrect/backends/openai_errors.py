"""One line for each failure the `openai` client gives up on: which server, which endpoint, and why, in words a
user can act on (a variable to set, a timeout to raise), with the server's own message where it sent one.

The API key never gets through: it is scrubbed from anything a server echoes back, and URLs are shown without any
user:password part.
"""

from __future__ import annotations

import json
import os
import socket
import urllib.parse
from dataclasses import dataclass

from selfcorrect.errors import SelfCorrectError


def one_line(text: str, limit: int = 300) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[:limit - 3] + "..."


def display_url(url: str) -> str:
    """The URL without any user:password part, for messages."""
    parts = urllib.parse.urlsplit(url)
    host = parts.hostname or ""
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urllib.parse.urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def server_message(body: bytes) -> str:
    """The human part of an error body: OpenAI's {"error": {"message"}}, vLLM's {"message"}, FastAPI's {"detail"}."""
    try:
        data = json.loads(body)
    except ValueError:
        return one_line(body.decode("utf-8", "replace"))
    if isinstance(data, dict):
        error = data.get("error")
        for candidate in (error.get("message") if isinstance(error, dict) else error, data.get("message"),
                          data.get("detail")):
            if candidate:
                return one_line(str(candidate))
    return one_line(json.dumps(data))


def retried(status: int) -> bool:
    """Whether the `openai` package retries this status (its `_should_retry`): the rest are the request's fault."""
    return status in (408, 409, 429) or status >= 500


@dataclass(frozen=True)
class Server:
    """What a message says about the server: its URL, the variable holding its key, the client's timeout."""

    base_url: str
    key_env: str
    timeout: float

    @property
    def where(self) -> str:
        return display_url(self.base_url)

    def scrub(self, text: str) -> str:
        """Never let the key through, even if a server echoes it back."""
        key = os.environ.get(self.key_env)
        return text.replace(key, "***") if key else text

    def failure(self, exc: Exception, path: str, retries: int) -> SelfCorrectError:
        """The one-line error for `exc`, raised by the client on `path` after `retries` retries."""
        import openai

        after = f"(after {retries} retries)"
        if isinstance(exc, openai.APIStatusError):
            status, message = exc.status_code, self.scrub(server_message(exc.response.content))
            if retried(status):
                return SelfCorrectError(f"OpenAI-compatible server at {self.where} kept failing on {path}: "
                                        f"HTTP {status} {message} {after}")
            hint = ""
            if status in (401, 403):
                hint = f"; set {self.key_env} to a valid key"
            elif status == 404 and not self.base_url.endswith("/v1"):
                hint = " (OpenAI-compatible servers usually want a base_url ending in /v1)"
            return SelfCorrectError(f"OpenAI-compatible server at {self.where} rejected {path}: HTTP {status} "
                                    f"{message}{hint}")
        if isinstance(exc, openai.APITimeoutError):
            return SelfCorrectError(f"cannot reach OpenAI-compatible server at {self.where}: no answer within "
                                    f"{self.timeout:g} s (raise backend_options.timeout or lower max_concurrency) "
                                    f"{after}")
        if isinstance(exc, openai.APIConnectionError):
            return SelfCorrectError(f"cannot reach OpenAI-compatible server at {self.where}: "
                                    f"{self.connection_reason(exc)} {after}")
        return SelfCorrectError(f"OpenAI-compatible server at {self.where} answered {path} with something the "
                                f"client cannot read: {self.scrub(one_line(str(exc), 200))}")

    def connection_reason(self, exc: BaseException) -> str:
        """The root cause under the client's "Connection error.", in a few words."""
        seen: BaseException | None = exc
        while seen is not None:
            if isinstance(seen, ConnectionRefusedError):
                return "connection refused"
            if isinstance(seen, socket.gaierror):
                return f"unknown host {urllib.parse.urlsplit(self.base_url).hostname!r}"
            if isinstance(seen, ConnectionError):
                return "connection lost"
            seen = seen.__cause__ or seen.__context__
        cause = exc.__cause__ or exc  # e.g. "Server disconnected without sending a response."
        return self.scrub(one_line(str(cause) or type(cause).__name__, 120))
