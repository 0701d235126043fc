"""A model server as its own process, for the tests that need one we can kill: on a free loopback port, its output
to a log file (a pipe nobody reads fills up and stalls the server), waited for until /health answers."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class ServerProcess:
    """`command` (which must listen on 127.0.0.1:`port`) run in its own process group."""

    def __init__(self, command: list[str], port: int, log: Path, env: dict[str, str] | None = None) -> None:
        self.command, self.port, self.log = command, port, log
        self.env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", **(env or {})}
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def start(self, startup_s: float = 180) -> ServerProcess:
        with self.log.open("wb") as sink:
            self.process = subprocess.Popen(self.command, env=self.env, stdout=sink, stderr=subprocess.STDOUT,
                                            start_new_session=True)
        deadline = time.monotonic() + startup_s
        while True:
            if not self.running:
                pytest.fail(f"{self.command[:4]} exited: {self.log.read_text(errors='replace')[-2000:]}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/health", timeout=1):
                    return self
            except OSError:
                if time.monotonic() > deadline:
                    self.kill()
                    pytest.fail(f"{self.command[:4]} did not answer within {startup_s} s")
                time.sleep(0.2)

    def kill(self, sig: int = signal.SIGKILL) -> None:
        """Signal the whole process group and wait for it (SIGKILL: no goodbye on the socket)."""
        if self.running:
            os.killpg(self.process.pid, sig)
        if self.process is not None:
            self.process.wait(timeout=30)

    def stop(self) -> None:
        """SIGTERM, then SIGKILL if it does not exit within 20 s."""
        try:
            if self.running:
                os.killpg(self.process.pid, signal.SIGTERM)
                self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.kill()
