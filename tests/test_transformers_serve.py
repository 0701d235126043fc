"""The `openai` backend against a server we did not write: `transformers serve` hosting a tiny random Qwen2 from a
local folder, offline, on loopback, started and stopped here.

It answers chat completions end to end, and what it does not give is found out and written into the run: it
ignores `logprobs` (the run's summary says "not returned by the server", and the warning is printed once) and `n`
(a request for two samples stops in one line), and its seed is one global torch seed rather than the request's, so
the seed check runs and its finding is recorded.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request

import pytest

from selfcorrect.backends.base import GenerationRequest, SamplingParams
from selfcorrect.backends.openai import OpenAIBackend
from selfcorrect.cli import main
from selfcorrect.errors import SelfCorrectError

STARTUP_S = 180


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def transformers_serve(tmp_path_factory):
    """(model folder, base URL) of a running `transformers serve`; stopped (SIGTERM, then SIGKILL) afterwards."""
    from selfcorrect.sandbox.tiny_hf import tiny_model_dir

    scratch = tmp_path_factory.mktemp("transformers-serve")
    model = tiny_model_dir("qwen2", scratch / "models")
    # transformers serve samples only where the model's generation config says do_sample (temperature alone is not
    # enough); without it every request is greedy, which the seed check reports as "no sampling seen".
    settings = json.loads((model / "generation_config.json").read_text())
    (model / "generation_config.json").write_text(json.dumps({**settings, "do_sample": True}))
    port = _free_port()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_DISABLE_UPDATE_CHECK": "1", "HF_HOME": str(scratch / "hf"),
           "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    log = scratch / "server.log"  # not a pipe: one nobody reads fills up and stalls the server
    with log.open("wb") as sink:
        server = subprocess.Popen([sys.executable, "-m", "transformers.cli.transformers", "serve", str(model),
                                   "--host", "127.0.0.1", "--port", str(port), "--device", "cpu", "--dtype",
                                   "float32"], env=env, stdout=sink, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + STARTUP_S
        while True:
            if server.poll() is not None:
                pytest.fail(f"transformers serve exited: {log.read_text(errors='replace')[-2000:]}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    pytest.fail(f"transformers serve did not answer within {STARTUP_S} s")
                time.sleep(0.25)
        yield model, f"http://127.0.0.1:{port}/v1"
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait(timeout=20)


@pytest.mark.slow
def test_an_eval_runs_through_transformers_serve_and_records_what_it_does_not_give(transformers_serve, tmp_path,
                                                                                    capsys, caplog):
    model, url = transformers_serve
    run = tmp_path / "run"
    code = main(["eval", "--out", str(run), "--backend", "openai", "--model", str(model), "--base-url", url,
                 "--task", "sandbox-chain", "--set", "task_options.sizes.test=4", "--rounds", "1",
                 "--temperature", "0.7", "--set", "max_new_tokens=8", "--set", "backend_options.max_retries=2",
                 "--set", "backend_options.max_concurrency=1", "--no-cache", "--quiet"])
    err = capsys.readouterr().err
    assert code == 0, err
    rows = [json.loads(line) for line in (run / "samples.jsonl").read_text().splitlines()]
    assert len(rows) == 4 and all(len([t for t in r["turns"] if t["role"] == "assistant"]) == 2 for r in rows)
    assert all("logprobs" not in t for r in rows for t in r["turns"])
    summary = json.loads((run / "summary.json").read_text())
    assert summary["backend"]["server"] == url
    assert summary["backend"]["logprobs"] == "not returned by the server"
    # One request at a time, its global torch seed is the request's: the check finds seeds honoured.
    assert summary["backend"]["seeds"].startswith("honoured")
    assert summary["logprobs"].startswith("unavailable")
    warned = [r.getMessage() for r in caplog.records if "returned no logprobs" in r.getMessage()]
    assert len(warned) == 1  # said once, not once per request


@pytest.mark.slow
def test_a_server_that_ignores_n_stops_the_request_in_one_line(transformers_serve):
    model, url = transformers_serve
    client = OpenAIBackend(str(model), url, max_retries=2)
    request = GenerationRequest(SamplingParams(temperature=1.0, max_new_tokens=4, n=2, seed=1),
                                messages=[{"role": "user", "content": "hi"}])
    with pytest.raises(SelfCorrectError) as refused:
        client.generate([request])
    assert str(refused.value) == (f"OpenAI-compatible server at {url} returned 1 choice(s) for n=2; it may not "
                                  "support n > 1 (use n=1 or another server)")
    client.close()
