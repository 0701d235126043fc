"""The generation cache: a rerun costs no backend call, keys cover what decides an output (seed, model weights) and
nothing secret (API key, base URL), order survives mixed hits and misses, and processes can share one file."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import textwrap
from dataclasses import replace

import pytest

from selfcorrect.backends.base import Generation, GenerationRequest, SamplingParams
from selfcorrect.backends.cache import CachedBackend, GenerationCache
from selfcorrect.backends.openai import OpenAIBackend
from selfcorrect.backends.scripted import ScriptedBackend
from selfcorrect.errors import SelfCorrectError
from selfcorrect.methods.evaluate import EvalConfig, run_eval


def _echo(request, sample):
    return f"{request.messages[-1]['content']}|{request.params.seed}|{sample}"


def _request(text: str, seed: int = 0, n: int = 1) -> GenerationRequest:
    return GenerationRequest(SamplingParams(temperature=1.0, n=n, seed=seed),
                             messages=[{"role": "user", "content": text}])


def test_a_second_identical_run_makes_no_backend_call(tmp_path):
    config = EvalConfig(task="sandbox-chain", task_options={"n_digits": 4, "sizes": {"test": 20}}, backend="scripted",
                        rounds=2, chunk_size=8, temperature=1.0)
    first = CachedBackend(ScriptedBackend(respond=_echo), tmp_path / "cache.sqlite")
    run_eval(config, tmp_path / "a", quiet=True, backend=first)
    assert first.inner.calls == [8, 8, 8, 8, 8, 8, 4, 4, 4] and first.hits == 0 and first.misses == 60

    second = CachedBackend(ScriptedBackend(respond=_echo), tmp_path / "cache.sqlite")
    run_eval(config, tmp_path / "b", quiet=True, backend=second)
    assert second.inner.calls == [] and second.inner_calls == 0 and second.hits == 60
    assert (tmp_path / "a" / "samples.jsonl").read_bytes() == (tmp_path / "b" / "samples.jsonl").read_bytes()


def test_mixed_hits_and_misses_come_back_in_order_and_misses_go_in_one_call(tmp_path):
    backend = CachedBackend(ScriptedBackend(respond=_echo), tmp_path / "cache.sqlite")
    backend.generate([_request("b", n=2), _request("d")])
    batch = [_request("a"), _request("b", n=2), _request("c", n=2), _request("d"), _request("a"),
             _request("b", seed=1, n=2)]
    gens = backend.generate(batch)
    assert backend.inner.calls == [2, 3]  # a (twice in the batch, sent once), c, b with another seed
    assert (backend.hits, backend.misses) == (2, 6)
    assert [(g.text, g.request_index, g.sample_index) for g in gens] == [
        ("a|0|0", 0, 0), ("b|0|0", 1, 0), ("b|0|1", 1, 1), ("c|0|0", 2, 0), ("c|0|1", 2, 1), ("d|0|0", 3, 0),
        ("a|0|0", 4, 0), ("b|1|0", 5, 0), ("b|1|1", 5, 1)]
    assert gens == ScriptedBackend(respond=_echo).generate(batch)  # every field, logprobs included


def test_the_key_covers_seed_and_hidden_layers_but_not_api_key_or_base_url(tmp_path, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-very-secret")
    here = CachedBackend(OpenAIBackend("m", "http://127.0.0.1:1/v1", check=False), tmp_path / "c.sqlite")
    there = CachedBackend(OpenAIBackend("m", "https://example.invalid/v1", check=False), tmp_path / "c.sqlite")
    request = _request("q", seed=5)
    assert here.key(request) == there.key(request)
    assert here.key(request) != here.key(replace(request, params=replace(request.params, seed=6)))
    assert here.key(request) != here.key(replace(request, hidden_layers=(-1,)))
    other_model = CachedBackend(OpenAIBackend("m2", "http://127.0.0.1:1/v1", check=False), tmp_path / "c.sqlite")
    assert other_model.key(request) != here.key(request)
    here.cache.put_many("openai:m", {here.key(request): [Generation(text="x", finish_reason="stop")]})
    stored = b"".join(f.read_bytes() for f in tmp_path.glob("c.sqlite*"))
    assert b"openai:m" in stored and b"sk-very-secret" not in stored and b"127.0.0.1" not in stored


def test_a_model_folder_changed_in_place_is_a_miss(tmp_path):
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "model.safetensors").write_bytes(b"weights v1")

    class Local(ScriptedBackend):
        model_id = str(folder)

    first = CachedBackend(Local(respond=_echo), tmp_path / "c.sqlite")
    first.generate([_request("q")])
    same = CachedBackend(Local(respond=_echo), tmp_path / "c.sqlite")
    same.generate([_request("q")])
    assert same.hits == 1 and same.inner.calls == []
    (folder / "model.safetensors").write_bytes(b"weights v2, retrained")
    again = CachedBackend(Local(respond=_echo), tmp_path / "c.sqlite")
    again.generate([_request("q")])
    assert again.misses == 1 and again.inner.calls == [1]


def test_the_wrapper_changes_generate_only():
    inner = ScriptedBackend(respond=_echo)
    inner.tokenizer = "the inner tokenizer"
    backend = CachedBackend(inner, ":memory:")
    assert (backend.name, backend.model_id, backend.tokenizer, backend.supports_logprobs) == \
        ("scripted", "scripted", "the inner tokenizer", True)
    assert backend.generate([_request("q")]) == inner.generate([_request("q")])


def test_hidden_states_round_trip_with_integer_layers(tmp_path):
    cache = GenerationCache(tmp_path / "c.sqlite")
    gen = Generation(text="t", finish_reason="length", token_ids=[1, 2], token_logprobs=[-0.25, -1.5],
                     token_entropies=[0.5, 0.125], hidden_states={-1: [0.1, 0.2], 0: [1.0, 2.0]}, sample_index=0)
    cache.put_many("m", {"k": [gen]})
    assert cache.get_many(["k", "missing"]) == {"k": [gen]}


def test_a_file_that_is_not_a_database_is_one_clear_error(tmp_path):
    path = tmp_path / "broken.sqlite"
    path.write_text("this is not sqlite " * 100)
    with pytest.raises(SelfCorrectError, match=r"generation cache .* cannot be used .*--no-cache"):
        GenerationCache(path)


_WORKER = textwrap.dedent("""
    import sys
    from selfcorrect.backends.base import GenerationRequest, SamplingParams
    from selfcorrect.backends.cache import CachedBackend
    from selfcorrect.backends.scripted import ScriptedBackend

    path, start = sys.argv[1], int(sys.argv[2])
    backend = CachedBackend(ScriptedBackend(respond=lambda r, s: r.prompt * 2), path)
    for batch in range(20):
        requests = [GenerationRequest(SamplingParams(n=2, seed=i), prompt=f"p{i}")
                    for i in range(start + batch * 10, start + batch * 10 + 30)]
        gens = backend.generate(requests)
        assert [g.text for g in gens] == [r.prompt * 2 for r in requests for _ in range(2)]
    print(backend.hits, backend.misses)
""")


@pytest.mark.slow
def test_concurrent_processes_share_one_file_without_corrupting_it(tmp_path):
    path = tmp_path / "shared.sqlite"
    workers = [subprocess.Popen([sys.executable, "-c", _WORKER, str(path), str(start)], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True) for start in (0, 50, 100)]
    outcomes = [w.communicate(timeout=60) for w in workers]
    assert [w.returncode for w in workers] == [0, 0, 0], [err[-2000:] for _, err in outcomes]
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        rows = db.execute("SELECT value FROM generations").fetchall()
    assert len(rows) == 320  # prompts p0..p319, each stored once
    assert all(len(json.loads(value)) == 2 for (value,) in rows)
    misses = sum(int(out.split()[1]) for out, _ in outcomes)
    assert 320 <= misses <= 3 * 220  # every prompt missed at least once; no worker missed one it had stored


def test_the_wrapper_keeps_the_capability_flags_of_what_it_wraps(tmp_path):
    """Option scoring asks `supports_option_scoring`; behind the cache the answer must still be the backend's."""
    from selfcorrect.methods.option_scoring import cannot_score

    class Scoring(ScriptedBackend):
        supports_option_scoring = True

    assert cannot_score(CachedBackend(Scoring(default="x"), tmp_path / "a.sqlite")) is None
    assert "cannot score" in cannot_score(CachedBackend(ScriptedBackend(default="x"), tmp_path / "b.sqlite"))
