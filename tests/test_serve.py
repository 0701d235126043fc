"""`selfcorrect serve` (FastAPI + uvicorn) as the official `openai` client sees it, hosting a tiny gpt2 on loopback:
models, chat and completions, logprobs and top_logprobs, n and seed, streaming, concurrent requests batched, and
OpenAI-shaped 404/400 errors; plus the request rules of the wire format with no server."""

from __future__ import annotations

import json
import os
import threading
import time

import pytest

from selfcorrect.backends.base import GenerationRequest, SamplingParams
from selfcorrect.cli import main
from selfcorrect.errors import SelfCorrectError
from selfcorrect.serving.wire import APIError, Reply

os.environ.setdefault("HF_HUB_OFFLINE", "1")

CHAT = [{"role": "user", "content": "What is 12 + 7?"}]


# -- the wire format, no server --------------------------------------------------------------------------------------

@pytest.mark.parametrize(("body", "chat", "message"), [
    ({"top_logprobs": 2}, True, "'top_logprobs' needs 'logprobs': true"),
    ({"logprobs": True, "top_logprobs": 21}, True, "top_logprobs must be between 0 and 20, got 21"),
    ({"logprobs": 6}, False, "logprobs must be between 0 and 5, got 6"),
    ({"logprobs": "yes"}, True, "'logprobs' has the wrong type"),
    ({"stream": 1}, True, "'stream' has the wrong type"),
])
def test_reply_rules_refuse_what_openai_refuses(body, chat, message):
    with pytest.raises(APIError) as refused:
        Reply.from_body(body, chat)
    assert refused.value.status == 400 and message in refused.value.message


def test_reply_reads_both_ways_of_asking_for_logprobs():
    assert (Reply.from_body({"logprobs": True, "top_logprobs": 3}, True).top, Reply.from_body({}, True).logprobs) \
        == (3, False)
    legacy = Reply.from_body({"logprobs": 2, "stream": True, "stream_options": {"include_usage": True}}, False)
    assert (legacy.logprobs, legacy.top, legacy.stream, legacy.stream_usage) == (True, 2, True, True)


# -- a real server and the official client ----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def hf(tmp_path_factory):
    import torch

    from selfcorrect.backends.hf import HFBackend
    from selfcorrect.testing.tiny_hf import tiny_model_dir

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield HFBackend(str(tiny_model_dir("gpt2", tmp_path_factory.mktemp("tiny-models"))))
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def server(hf):
    from selfcorrect.serving.app import make_server

    running = make_server(hf, model_name="tiny").start()
    yield running
    running.stop()


@pytest.fixture(scope="module")
def client(server):
    import openai

    with openai.OpenAI(base_url=server.url, api_key="unused", max_retries=0, timeout=60) as made:
        yield made


@pytest.mark.slow
def test_chat_with_n_seed_and_logprobs_equals_the_hf_backend(client, hf):
    assert [m.id for m in client.models.list().data] == ["tiny"]
    answer = client.chat.completions.create(model="tiny", messages=CHAT, n=3, seed=7, temperature=1.0,
                                            max_tokens=8, logprobs=True)
    again = client.chat.completions.create(model="tiny", messages=CHAT, n=3, seed=7, temperature=1.0,
                                           max_tokens=8, logprobs=True)
    direct = hf.generate([GenerationRequest(SamplingParams(temperature=1.0, max_new_tokens=8, n=3, seed=7),
                                            messages=CHAT)])
    texts = [c.message.content for c in answer.choices]
    assert texts == [c.message.content for c in again.choices] == [g.text for g in direct]
    assert len(set(texts)) > 1  # three samples, not one sample three times
    for choice, gen in zip(answer.choices, direct, strict=True):
        assert [t.logprob for t in choice.logprobs.content] == pytest.approx(gen.token_logprobs, abs=1e-4)
    assert answer.usage.completion_tokens == sum(len(g.token_ids) for g in direct)


@pytest.mark.slow
def test_top_logprobs_are_the_models_best_tokens_in_order(client):
    answer = client.chat.completions.create(model="tiny", messages=CHAT, max_tokens=6, temperature=0,
                                            logprobs=True, top_logprobs=3)
    entries = answer.choices[0].logprobs.content
    assert entries
    for entry in entries:
        values = [t.logprob for t in entry.top_logprobs]
        assert len(values) == 3 and values == sorted(values, reverse=True)
        assert values[0] == pytest.approx(entry.logprob, abs=1e-4)  # greedy: the chosen token is the best one
        assert entry.top_logprobs[0].token == entry.token
    legacy = client.completions.create(model="tiny", prompt="12 + 7 =", max_tokens=4, temperature=1.0, seed=3,
                                       logprobs=2, extra_body={"return_tokens_as_token_ids": True})
    logprobs = legacy.choices[0].logprobs
    assert len(logprobs.top_logprobs) == len(logprobs.tokens) and all(len(t) == 2 for t in logprobs.top_logprobs)
    for token, value, top in zip(logprobs.tokens, logprobs.token_logprobs, logprobs.top_logprobs, strict=True):
        assert max(top.values()) >= value - 1e-4
        if token in top:
            assert top[token] == pytest.approx(value, abs=1e-4)


@pytest.mark.slow
def test_a_stream_spells_the_same_answer_token_by_token(client):
    kwargs = {"model": "tiny", "messages": CHAT, "n": 2, "seed": 11, "temperature": 1.0, "max_tokens": 8,
              "logprobs": True, "stop": ["\n\n"]}
    whole = client.chat.completions.create(**kwargs)
    texts, logprobs, finish, usage = {0: "", 1: ""}, {0: [], 1: []}, {}, None
    for chunk in client.chat.completions.create(**kwargs, stream=True, stream_options={"include_usage": True}):
        if chunk.usage is not None:
            usage = chunk.usage
        for choice in chunk.choices:
            texts[choice.index] += choice.delta.content or ""
            logprobs[choice.index] += [t.logprob for t in (choice.logprobs.content if choice.logprobs else [])]
            finish[choice.index] = choice.finish_reason or finish.get(choice.index)
    assert [texts[0], texts[1]] == [c.message.content for c in whole.choices]
    assert [logprobs[0], logprobs[1]] == [[t.logprob for t in c.logprobs.content] for c in whole.choices]
    assert [finish[0], finish[1]] == [c.finish_reason for c in whole.choices]
    assert usage is not None and usage.completion_tokens == whole.usage.completion_tokens
    streamed = "".join(c.choices[0].text for c in client.completions.create(
        model="tiny", prompt="12 + 7 =", max_tokens=5, temperature=0, stream=True) if c.choices)
    assert streamed == client.completions.create(model="tiny", prompt="12 + 7 =", max_tokens=5,
                                                 temperature=0).choices[0].text


@pytest.mark.slow
def test_concurrent_requests_are_batched_and_each_keeps_its_seed(client, server):
    before = len(server.service.batcher.batches)
    results: dict[int, str] = {}

    def ask(seed: int) -> None:
        answer = client.chat.completions.create(model="tiny", messages=CHAT, seed=seed, temperature=1.0,
                                                max_tokens=6)
        results[seed] = answer.choices[0].message.content

    threads = [threading.Thread(target=ask, args=(seed,)) for seed in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(results) == list(range(16))
    batches = server.service.batcher.batches[before:]
    assert sum(batches) == 16 and max(batches) > 1  # requests in flight were decoded together
    alone = client.chat.completions.create(model="tiny", messages=CHAT, seed=5, temperature=1.0, max_tokens=6)
    assert alone.choices[0].message.content == results[5]


@pytest.mark.slow
def test_errors_are_openai_shaped_so_the_client_raises_typed_errors(client):
    import openai

    cases = [(lambda: client.chat.completions.create(model="other", messages=CHAT), openai.NotFoundError,
              "this server serves 'tiny'"),
             (lambda: client.chat.completions.create(model="tiny", messages=[]), openai.BadRequestError,
              "'messages' must be a non-empty list"),
             (lambda: client.chat.completions.create(model="tiny", messages=CHAT, temperature=-1),
              openai.BadRequestError, "temperature must be 0 (greedy) or in [0.01, 2]"),
             (lambda: client.embeddings.create(model="tiny", input="x"), openai.NotFoundError,
              "no route POST /v1/embeddings")]
    for call, error, message in cases:
        with pytest.raises(error) as raised:
            call()
        assert raised.value.body["message"].startswith(message) or message in raised.value.body["message"]


@pytest.mark.slow
def test_completions_take_a_list_of_prompts_and_plain_http_gets_health_and_400s(client, server):
    import urllib.error
    import urllib.request

    answer = client.completions.create(model="tiny", prompt=["Alice has", "12 + 7 ="], n=2, max_tokens=5,
                                       temperature=0, logprobs=1)
    assert [c.index for c in answer.choices] == [0, 1, 2, 3]
    assert all(len(c.logprobs.token_logprobs) == len(c.logprobs.tokens) for c in answer.choices)
    assert answer.usage.completion_tokens == sum(len(c.logprobs.tokens) for c in answer.choices)
    assert answer.usage.prompt_tokens > 0
    base = server.url.removesuffix("/v1")
    with urllib.request.urlopen(base + "/health", timeout=20) as response:
        assert json.loads(response.read()) == {"status": "ok"}
    request = urllib.request.Request(server.url + "/chat/completions", data=b"{not json",
                                     headers={"Content-Type": "application/json"})
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=20)
    assert refused.value.code == 400
    assert json.loads(refused.value.read())["error"]["message"] == "the request body is not valid JSON"


def test_queued_requests_share_a_batch_and_a_failing_one_does_not_fail_its_mates():
    from selfcorrect.backends.scripted import ScriptedBackend
    from selfcorrect.serving.batcher import Batcher

    release = threading.Event()

    def respond(request, _sample):
        if request.prompt == "first":
            release.wait(10)  # keeps the worker busy while the others queue up
        if request.prompt == "bad":
            raise SelfCorrectError("this prompt is too long")
        return request.prompt.upper()

    batcher = Batcher(ScriptedBackend(respond=respond))
    results: dict[str, object] = {}

    def ask(prompt):
        try:
            results[prompt] = [g.text for g in batcher.submit([GenerationRequest(SamplingParams(), prompt=prompt)])]
        except SelfCorrectError as exc:
            results[prompt] = str(exc)

    threads = [threading.Thread(target=ask, args=(p,)) for p in ("first", "good", "bad")]
    threads[0].start()
    while not batcher.batches:
        time.sleep(0.001)
    for thread in threads[1:]:
        thread.start()
    while batcher._queue.qsize() < 2:
        time.sleep(0.001)
    release.set()
    for thread in threads:
        thread.join()
    batcher.close()
    assert results == {"first": ["FIRST"], "good": ["GOOD"], "bad": "this prompt is too long"}
    assert batcher.batches == [1, 2, 1, 1]  # the queued pair together, then one by one to isolate the failure


def test_top_logprobs_on_a_backend_without_a_model_is_a_400():
    import openai

    from selfcorrect.backends.scripted import ScriptedBackend
    from selfcorrect.serving.app import make_server

    running = make_server(ScriptedBackend(respond=lambda request, _sample: "4"), model_name="s").start()
    try:
        with openai.OpenAI(base_url=running.url, api_key="unused", max_retries=0) as client:
            assert client.chat.completions.create(model="s", messages=CHAT).choices[0].message.content == "4"
            with pytest.raises(openai.BadRequestError, match="top_logprobs need a model"):
                client.chat.completions.create(model="s", messages=CHAT, logprobs=True, top_logprobs=2)
    finally:
        running.stop()


def test_serve_reports_a_missing_model_in_one_line(capsys):
    assert main(["serve", "--model", "/no/such/model", "--port", "0"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: model folder /no/such/model does not exist") and err.count("\n") == 1
