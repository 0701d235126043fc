"""The openai backend (the official `openai` client): payloads with no server; retries, one-line errors, bounded
concurrency and the seed check against a scripted server; and, against `selfcorrect serve` hosting a tiny model on
loopback, results equal to the hf backend's (greedy and seeded sampling). tests/test_server_outage.py kills the
server mid-run; tests/test_transformers_serve.py runs against a server we did not write."""

from __future__ import annotations

import json
import os
import socket
import threading
import time
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from selfcorrect.backends.base import Backend, GenerationRequest, SamplingParams
from selfcorrect.backends.openai import OpenAIBackend, parse_logprobs
from selfcorrect.cli import main
from selfcorrect.errors import SelfCorrectError
from selfcorrect.methods.evaluate import EvalConfig, run_eval

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")

FAST = {"max_retries": 2, "timeout": 20}
PARAMS = SamplingParams(temperature=0.7, top_p=0.9, max_new_tokens=12, n=2, seed=42, stop=("\n\n",))
CHAT = [{"role": "user", "content": "What is 2 + 3?"}]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _client(url: str = "http://127.0.0.1:1/v1", **options) -> OpenAIBackend:
    return OpenAIBackend("tiny", url, **{"check": False, **FAST, **options})


# -- payloads and parsing, no server -----------------------------------------------------------------------------

def test_chat_payload_carries_every_sampling_setting_and_asks_for_logprobs():
    path, body = _client().payload(GenerationRequest(PARAMS, messages=CHAT))
    assert path == "/chat/completions"
    assert body == {"model": "tiny", "messages": CHAT, "temperature": 0.7, "top_p": 0.9, "max_tokens": 12, "n": 2,
                    "seed": 42, "stop": ["\n\n"], "logprobs": True}  # the keyword arguments of the client's create


def test_greedy_n_samples_ask_the_server_for_one_choice_and_repeat_it():
    """A vLLM server refuses n > 1 at temperature 0, and greedy decoding has one answer anyway."""
    request = GenerationRequest(SamplingParams(n=3), messages=CHAT)
    client = _client()
    assert client.payload(request)[1]["n"] == 1
    gens = client.parse(request, {"choices": [{"index": 0, "message": {"content": "5"}, "finish_reason": "stop"}]},
                        chat=True)
    assert [(g.text, g.sample_index) for g in gens] == [("5", 0), ("5", 1), ("5", 2)]


def test_raw_prompts_go_to_completions_and_options_shape_the_body():
    client = _client(logprobs=False, extra_body={"return_tokens_as_token_ids": True})
    path, body = client.payload(GenerationRequest(SamplingParams(), prompt="12 + 7 ="))
    assert path == "/completions" and body["prompt"] == "12 + 7 =" and "logprobs" not in body
    assert body["extra_body"] == {"return_tokens_as_token_ids": True} and "stop" not in body
    with pytest.raises(SelfCorrectError, match="api='completions' needs tokenizer="):
        _client(api="completions").payload(GenerationRequest(PARAMS, messages=CHAT))


def test_bad_options_are_one_line_errors():
    with pytest.raises(SelfCorrectError, match="base_url must start with http"):
        OpenAIBackend("m", "127.0.0.1:8000/v1", check=False)
    with pytest.raises(SelfCorrectError, match="api must be one of chat, completions"):
        OpenAIBackend("m", "http://x/v1", api="responses", check=False)


def test_api_key_goes_only_into_the_authorization_header(monkeypatch, caplog):
    import logging

    caplog.set_level(logging.DEBUG)  # the openai client's and httpx's debug logs included
    monkeypatch.setenv("MY_KEY", "sk-secret-123")
    with _running(_ScriptedServer()) as server:
        client = _client(server.url, api_key_env="MY_KEY")
        client.generate([_chat("hi")])
    assert server.seen[0][1] == "Bearer sk-secret-123"
    _, body = client.payload(GenerationRequest(PARAMS, messages=CHAT))
    assert "sk-secret" not in json.dumps(body) + repr(client) + client.model_id + json.dumps(client.capabilities())
    assert "Sending HTTP Request" in caplog.text and "sk-secret" not in caplog.text
    monkeypatch.delenv("MY_KEY")
    with _running(_ScriptedServer()) as server:
        _client(server.url, api_key_env="MY_KEY").generate([_chat("hi")])
    assert server.seen[0][1] == "Bearer EMPTY"  # no key: the placeholder keyless servers ignore


def test_parse_orders_choices_reads_logprobs_and_token_ids():
    client = _client()
    response = {"choices": [
        {"index": 1, "message": {"content": "b"}, "finish_reason": "length",
         "logprobs": {"content": [{"token": "token_id:7", "logprob": -0.5}, {"token": "token_id:9", "logprob": -1}]}},
        {"index": 0, "message": {"content": "a\n\nignored"}, "finish_reason": "stop", "logprobs": None}],
        "usage": {"prompt_tokens": 5, "completion_tokens": 3}}
    first, second = client.parse(GenerationRequest(PARAMS, messages=CHAT), response, chat=True)
    assert (first.text, first.sample_index, first.token_logprobs) == ("a", 0, None)  # cut at the stop string
    assert (second.text, second.finish_reason, second.token_ids, second.token_logprobs) == \
        ("b", "length", [7, 9], [-0.5, -1.0])
    assert client.supports_logprobs is False and client.usage["completion_tokens"] == 3
    assert parse_logprobs({"tokens": ["a", "b"], "token_logprobs": [-0.1, -0.2]}, chat=False) == ([-0.1, -0.2], [])
    with pytest.raises(SelfCorrectError, match=r"returned 1 choice.*n=2"):
        client.parse(GenerationRequest(PARAMS, messages=CHAT), {"choices": response["choices"][:1]}, chat=True)


# -- a scripted server: retries, errors, concurrency ---------------------------------------------------------------

class _Scripted(BaseHTTPRequestHandler):
    """Answers chat requests: first the queued failure statuses, then echoes (choices in reverse index order)."""

    server: _ScriptedServer

    def log_message(self, *args):
        pass

    def do_GET(self):
        self._send(200, {"data": [{"id": "tiny"}]})

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        state = self.server
        with state.lock:
            state.seen.append((body, self.headers.get("Authorization")))
            state.in_flight += 1
            state.peak = max(state.peak, state.in_flight)
            status = state.failures.pop(0) if state.failures else 200
        time.sleep(state.delay)
        with state.lock:
            state.in_flight -= 1
        if status != 200:
            headers = {"Retry-After": state.retry_after} if status == 429 else {}
            self._send(status, {"error": {"message": f"scripted {status} {state.echo_key}".strip()}}, headers)
            return
        content = body["messages"][-1]["content"]
        if state.seeds == "ignored":
            content += f"@{len(state.seen)}"  # a different text every time, whatever the seed
        elif state.seeds == "honoured":
            content += f"@{body['seed']}"
        choices = [{"index": k, "message": {"content": f"{content}#{k}"}, "finish_reason": "stop"}
                   for k in reversed(range(body["n"]))]
        self._send(200, {"choices": choices})

    def _send(self, status, payload, headers=None):
        data = json.dumps(payload).encode()
        self.send_response(status)
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


class _ScriptedServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, failures=(), delay=0.0, retry_after="0", echo_key="", seeds="unused"):
        super().__init__(("127.0.0.1", 0), _Scripted)
        self.failures, self.delay, self.retry_after, self.echo_key = list(failures), delay, retry_after, echo_key
        self.seeds = seeds  # "honoured": the text depends on the seed; "ignored": it changes every time
        self.seen, self.lock, self.in_flight, self.peak = [], threading.Lock(), 0, 0

    @property
    def url(self):
        return f"http://127.0.0.1:{self.server_address[1]}/v1"


@contextmanager
def _running(server):
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


def _chat(text: str, n: int = 1) -> GenerationRequest:
    """Greedy for one sample; several samples are drawn at temperature 1 (a greedy request asks for one choice)."""
    return GenerationRequest(SamplingParams(temperature=1.0 if n > 1 else 0.0, n=n),
                             messages=[{"role": "user", "content": text}])


def test_transient_failures_are_retried_and_retry_after_is_obeyed():
    with _running(_ScriptedServer(failures=[503, 429, 500], retry_after="0.3")) as server:
        client = _client(server.url, max_retries=5)
        started = time.perf_counter()
        [gen] = client.generate([_chat("hi")])
        assert time.perf_counter() - started >= 0.3  # the 429's Retry-After
    assert gen.text == "hi#0" and len(server.seen) == 4 and client.usage["retries"] == 3


def test_a_server_that_keeps_failing_or_rejects_gives_one_line():
    with _running(_ScriptedServer(failures=[503] * 10)) as server, pytest.raises(SelfCorrectError) as failing:
        _client(server.url, max_retries=2).generate([_chat("hi")])
    assert len(server.seen) == 3
    assert str(failing.value) == (f"OpenAI-compatible server at {server.url} kept failing on /chat/completions: "
                                  "HTTP 503 scripted 503 (after 2 retries)")
    rejected = r"rejected /chat/completions: HTTP 400 scripted 400"
    with _running(_ScriptedServer(failures=[400])) as server, pytest.raises(SelfCorrectError, match=rejected):
        _client(server.url).generate([_chat("hi")])
    assert len(server.seen) == 1  # a 400 is the request's fault: not retried


def test_a_refused_key_is_named_by_its_variable_and_never_echoed(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-secret-456")
    server = _ScriptedServer(failures=[401], echo_key="sk-secret-456")
    with _running(server), pytest.raises(SelfCorrectError) as refused:
        _client(server.url).generate([_chat("hi")])
    assert server.seen[0][1] == "Bearer sk-secret-456"
    message = str(refused.value)
    assert "HTTP 401" in message and "set OPENAI_API_KEY" in message and "sk-secret" not in message


def test_requests_run_concurrently_within_the_bound_and_come_back_in_order():
    with _running(_ScriptedServer(delay=0.05)) as server:
        client = _client(server.url, max_concurrency=3)
        gens = client.generate([_chat(f"q{i}", n=2) for i in range(9)])
    assert 2 <= server.peak <= 3
    assert [(g.text, g.request_index, g.sample_index) for g in gens] == \
        [(f"q{i}#{k}", i, k) for i in range(9) for k in range(2)]


@pytest.mark.parametrize(("seeds", "found", "sent"), [("honoured", "honoured", 6), ("ignored", "ignored", 5),
                                                      ("unused", "no sampling seen", 6)])
def test_a_seeded_sampled_request_is_sent_again_once_to_find_out_whether_seeds_hold(seeds, found, sent, caplog):
    sampled = GenerationRequest(SamplingParams(temperature=0.8, seed=3), messages=CHAT)
    with _running(_ScriptedServer(seeds=seeds)) as server:
        client = _client(server.url)
        client.generate([_chat("greedy")])
        assert client.capabilities()["seeds"] == "not checked (no seeded sampled request)"
        client.generate([_chat("greedy"), sampled])
        client.generate([sampled])
    # 1, then 2 and the same request again (then with seed 4 unless the repeat already differed), then 1: once
    assert len(server.seen) == sent
    [original] = [body for body, _ in server.seen[1:3] if body["temperature"] == 0.8]  # the pair went out at once
    assert server.seen[3][0] == original
    if sent == 6:
        assert server.seen[4][0] == {**original, "seed": 4}
    capabilities = client.capabilities()
    assert capabilities["seeds"].startswith(found)
    assert capabilities["logprobs"] == "not returned by the server" and capabilities["server"] == server.url
    assert ("sampled results may not repeat" in caplog.text) == (found != "honoured")


def test_the_first_rejected_request_cancels_the_ones_still_waiting():
    with _running(_ScriptedServer(failures=[400], delay=0.2)) as server, pytest.raises(SelfCorrectError):
        _client(server.url, max_concurrency=1).generate([_chat(f"q{i}") for i in range(10)])
    assert len(server.seen) == 1  # the other nine never went out


def test_an_unreachable_server_fails_fast_in_one_line():
    url = f"http://127.0.0.1:{_free_port()}/v1"
    started = time.perf_counter()
    with pytest.raises(SelfCorrectError) as unreachable:
        OpenAIBackend("tiny", url, max_retries=1)
    assert time.perf_counter() - started < 2
    assert str(unreachable.value) == f"cannot reach OpenAI-compatible server at {url}: connection refused " \
                                     "(after 1 retries)"


def test_cli_eval_against_an_unreachable_server_exits_2_with_one_line(tmp_path, capsys):
    url = f"http://127.0.0.1:{_free_port()}/v1"
    code = main(["eval", "--out", str(tmp_path / "run"), "--backend", "openai", "--model", "tiny", "--limit", "2",
                 "--set", f"backend_options.base_url={url}", "--set", "backend_options.max_retries=1",
                 "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and err == f"error: cannot reach OpenAI-compatible server at {url}: connection refused " \
                                "(after 1 retries)\n"


# -- a real server: selfcorrect serve hosting a tiny gpt2 ----------------------------------------------------------

TASK = {"task": "sandbox-chain", "task_options": {"n_digits": 4, "sizes": {"test": 12}}, "rounds": 2,
        "chunk_size": 4, "max_new_tokens": 10}


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    from selfcorrect.testing.tiny_hf import tiny_model_dir

    return tiny_model_dir("gpt2", tmp_path_factory.mktemp("tiny-models"))


@pytest.fixture(scope="module")
def hf(tiny_dir):
    import torch

    from selfcorrect.backends.hf import HFBackend

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield HFBackend(str(tiny_dir))
    torch.set_num_threads(threads)


@contextmanager
def _serving(backend: Backend, port: int = 0):
    from selfcorrect.serving.app import make_server

    server = make_server(backend, port=port, model_name="tiny").start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def served(hf):
    with _serving(hf) as server:
        yield server


def _turns(run_dir):
    """Per trajectory: what decides results (texts, verdicts, finish reasons), and the turns' logprob sums apart,
    since batch composition moves float32 logprobs in the 7th digit."""
    rows = [json.loads(line) for line in (run_dir / "samples.jsonl").read_text().splitlines()]
    turns = {r["id"]: [(t["role"], t["text"], t.get("verdict"), t.get("finish_reason")) for t in r["turns"]]
             for r in rows}
    logprobs = {r["id"]: [t["logprobs"]["sum_logprob"] for t in r["turns"] if "logprobs" in t] for r in rows}
    return turns, logprobs


def _assert_same_run(ours, reference):
    (turns, logprobs), (ref_turns, ref_logprobs) = _turns(ours), _turns(reference)
    assert len(turns) == 12 and turns == ref_turns
    assert logprobs.keys() == ref_logprobs.keys()
    for key, values in logprobs.items():
        assert len(values) == 3 and values == pytest.approx(ref_logprobs[key], abs=1e-4)


@pytest.fixture(scope="module")
def hf_run(hf, tiny_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("hf-run") / "run"
    summary = run_eval(EvalConfig(backend="hf", model=str(tiny_dir), **TASK), out, quiet=True, backend=hf)
    return out, summary


@pytest.mark.slow
def test_eval_through_the_server_equals_the_hf_backend_greedy(served, hf_run, tmp_path):
    hf_out, hf_summary = hf_run
    config = EvalConfig(backend="openai", model="tiny", backend_options={"base_url": served.url, **FAST}, cache=False,
                        **TASK)
    summary = run_eval(config, tmp_path / "run", quiet=True)
    _assert_same_run(tmp_path / "run", hf_out)
    assert summary["metrics"] == hf_summary["metrics"]
    assert summary["backend"] == {"name": "openai", "model": "tiny", "server": served.url, "logprobs": "returned",
                                  "seeds": "not checked (no seeded sampled request)"}  # greedy only
    assert set(hf_summary["backend"]) == {"name", "model", "dtype", "device"}  # nothing to find out in-process


@pytest.mark.slow
@pytest.mark.parametrize("api", ["chat", "completions"])
def test_seeded_samples_through_the_server_equal_the_hf_backend(served, hf, tiny_dir, api):
    requests = [GenerationRequest(SamplingParams(temperature=t, top_p=p, max_new_tokens=12, n=3, seed=seed),
                                  messages=[{"role": "user", "content": f"What is {seed} + 4?"}])
                for seed, t, p in [(1, 1.0, 1.0), (2, 0.8, 0.9), (3, 0.0, 1.0)]]
    client = OpenAIBackend("tiny", served.url, api=api, tokenizer=str(tiny_dir),
                           extra_body={"return_tokens_as_token_ids": True}, **FAST)
    ours, reference = client.generate(requests), hf.generate(requests)
    assert [(g.text, g.token_ids, g.finish_reason, g.request_index, g.sample_index) for g in ours] == \
        [(g.text, g.token_ids, g.finish_reason, g.request_index, g.sample_index) for g in reference]
    assert len({g.text for g in ours[:3]}) > 1  # the three samples of a sampled request differ
    for mine, theirs in zip(ours, reference, strict=True):
        assert mine.token_logprobs == pytest.approx(theirs.token_logprobs, abs=1e-4)
