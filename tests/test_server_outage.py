"""Kill the server in the middle of an `openai`-backend run: the run stops in one line with exit code 2, keeps the
chunks it finished, and `--resume` against a restarted server completes it with the results of an uninterrupted run.

The server is a real `selfcorrect serve` process hosting a tiny gpt2, killed with SIGKILL (no goodbye on the
socket), at a fixed point: as the run starts its second chunk, right after the first one is written.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from selfcorrect.backends.openai import OpenAIBackend
from selfcorrect.cli import main
from server_process import ServerProcess, free_port


def _rows(run: Path) -> dict[str, list]:
    rows = [json.loads(line) for line in (run / "samples.jsonl").read_text().splitlines()]
    return {r["id"]: [(t["role"], t["text"], t.get("verdict")) for t in r["turns"]] for r in rows}


@pytest.mark.slow
def test_a_killed_server_stops_the_run_in_one_line_and_resume_completes_it(tmp_path, monkeypatch, capsys):
    from selfcorrect.testing.tiny_hf import tiny_model_dir

    model = tiny_model_dir("gpt2", tmp_path / "models")
    port = free_port()
    url = f"http://127.0.0.1:{port}/v1"
    command = [sys.executable, "-m", "selfcorrect.cli", "serve", "--model", str(model), "--port", str(port),
               "--served-model-name", "tiny"]
    flags = ["--backend", "openai", "--model", "tiny", "--base-url", url, "--task", "sandbox-chain", "--rounds", "2",
             "--set", "task_options.n_digits=4", "--set", "task_options.sizes.test=12", "--set", "chunk_size=4",
             "--set", "max_new_tokens=10", "--set", "backend_options.max_retries=1", "--no-cache", "--quiet"]
    server = ServerProcess(command, port, tmp_path / "server.log").start()
    try:
        assert main(["eval", "--out", str(tmp_path / "whole"), *flags]) == 0
        capsys.readouterr()

        run = tmp_path / "run"
        generate = OpenAIBackend.generate

        def dies_after_the_first_chunk(self, requests):
            samples = run / "samples.jsonl"
            if server.running and samples.exists() and samples.read_text().count("\n") >= 4:
                server.kill()
            return generate(self, requests)

        monkeypatch.setattr(OpenAIBackend, "generate", dies_after_the_first_chunk)
        assert main(["eval", "--out", str(run), *flags]) == 2
        assert not server.running  # it really was killed mid-run
        assert capsys.readouterr().err == (f"error: cannot reach OpenAI-compatible server at {url}: connection "
                                           "refused (after 1 retries)\n")
        assert len(_rows(run)) == 4  # the finished chunk is kept; nothing of the interrupted one
        assert not (run / "summary.json").exists()
        monkeypatch.undo()

        server = ServerProcess(command, port, tmp_path / "server-again.log").start()
        assert main(["eval", "--out", str(run), *flags, "--resume"]) == 0
    finally:
        server.kill()
    lines = (run / "samples.jsonl").read_text().splitlines()
    assert len(lines) == 12 and len({json.loads(line)["id"] for line in lines}) == 12
    assert _rows(run) == _rows(tmp_path / "whole")
    resumed, whole = (json.loads((folder / "summary.json").read_text()) for folder in (run, tmp_path / "whole"))
    assert resumed["metrics"] == whole["metrics"]
