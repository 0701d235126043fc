"""The `openai` backend against a server we did not write: `transformers serve` hosting a tiny random Qwen2 from a
local folder, offline, on loopback, started and stopped here.

It answers chat completions end to end, and what it does not give is found out and written into the run: it
ignores `logprobs` (the run's summary says "not returned by the server", and the warning is printed once) and `n`
(a request for two samples stops in one line). Its seed is one global torch seed set per request, so with one
request in flight the seed check finds seeds honoured (docs/scale.md says what it found with 8 in flight).
"""

from __future__ import annotations

import json
import sys

import pytest

from selfcorrect.backends.base import GenerationRequest, SamplingParams
from selfcorrect.backends.openai import OpenAIBackend
from selfcorrect.cli import main
from selfcorrect.errors import SelfCorrectError
from server_process import ServerProcess, free_port


@pytest.fixture(scope="module")
def transformers_serve(tmp_path_factory):
    """(model folder, base URL) of a running `transformers serve`; stopped afterwards."""
    from selfcorrect.testing.tiny_hf import tiny_model_dir

    scratch = tmp_path_factory.mktemp("transformers-serve")
    model = tiny_model_dir("qwen2", scratch / "models")
    # transformers serve samples only where the model's generation config says do_sample (temperature alone is not
    # enough); without it every request is greedy, which the seed check reports as "no sampling seen".
    settings = json.loads((model / "generation_config.json").read_text())
    (model / "generation_config.json").write_text(json.dumps({**settings, "do_sample": True}))
    port = free_port()
    command = [sys.executable, "-m", "transformers.cli.transformers", "serve", str(model), "--host", "127.0.0.1",
               "--port", str(port), "--device", "cpu", "--dtype", "float32"]
    env = {"HF_HUB_DISABLE_UPDATE_CHECK": "1", "HF_HOME": str(scratch / "hf")}
    server = ServerProcess(command, port, scratch / "server.log", env)
    try:
        yield model, server.start().url
    finally:
        server.stop()


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
