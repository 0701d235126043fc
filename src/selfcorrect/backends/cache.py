"""A generation cache for every backend: `CachedBackend(backend, path)` answers repeated requests from SQLite.

Why: a rerun of an eval, a resumed run or a second method over the same prompts should not pay for generations it
already has, whichever backend made them (lm-eval's CachingLM, DSPy's request cache).

Key. `GenerationRequest.cache_key` of the backend's name and model: model, prompt, sampling settings and seed, and
the hidden layers asked for. Never the API key or the base URL (the same model behind another address or key is the
same model, as in DSPy). For a local model folder the key also covers the size and modification time of its weight
and config files, so a model retrained in place is a miss, never a stale hit. A backend wrapping a model that is
still training (`HFBackend.from_objects`) must not be cached: its `model_id` does not change as its weights do.

One `generate` call looks up every request, sends only the misses (each distinct key once) to the inner backend in
ONE call, stores their results and returns all generations in request order with `request_index` fixed up.

Concurrency. SQLite in WAL mode with a busy timeout: several processes can read and write the same file; a write is
one short `INSERT OR IGNORE` transaction, so when two processes generate the same request the first one stored wins
and every later reader sees that one.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

from selfcorrect.backends.base import Backend, Generation, GenerationRequest
from selfcorrect.errors import SelfCorrectError

CACHE_FILE = "generations.sqlite"
#: Files whose change means different weights; their size and mtime enter the key of a local model folder.
_MODEL_FILE_PATTERNS = ("*.safetensors", "*.bin", "*.pt", "*.gguf", "config.json", "generation_config.json",
                        "tokenizer.json", "tokenizer_config.json")
_SCHEMA = """CREATE TABLE IF NOT EXISTS generations (
    key TEXT PRIMARY KEY, model TEXT NOT NULL, value TEXT NOT NULL, created REAL NOT NULL)"""


def default_cache_path() -> Path:
    """`$SELFCORRECT_CACHE/generations.sqlite` (default `~/.cache/selfcorrect/`), beside the sandbox models."""
    from selfcorrect.models import cache_root

    return cache_root() / CACHE_FILE


def model_fingerprint(model_id: str) -> str:
    """`model_id`, plus size and mtime of the weight/config files when it names a local folder."""
    path = Path(model_id)
    if not path.is_dir():
        return model_id
    files = sorted({f for pattern in _MODEL_FILE_PATTERNS for f in path.glob(pattern) if f.is_file()})
    stats = [(f.name, f.stat().st_size, f.stat().st_mtime_ns) for f in files]
    return f"{model_id}|{stats}"


def _encode(generations: Sequence[Generation]) -> str:
    records = []
    for gen in generations:
        record = asdict(gen)
        record.pop("request_index")
        if record["hidden_states"] is not None:
            record["hidden_states"] = {str(k): v for k, v in record["hidden_states"].items()}
        records.append(record)
    return json.dumps(records, separators=(",", ":"))


def _decode(value: str) -> list[Generation]:
    generations = []
    for record in json.loads(value):
        if record.get("hidden_states") is not None:
            record["hidden_states"] = {int(k): v for k, v in record["hidden_states"].items()}
        generations.append(Generation(**record))
    return generations


class GenerationCache:
    """The SQLite file: key -> the n generations of one request. Safe to share between threads and processes."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path).expanduser()
        self._lock = threading.Lock()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(self.path, timeout=60, isolation_level=None, check_same_thread=False)
            self._db.execute("PRAGMA busy_timeout = 60000")
            self._db.execute("PRAGMA journal_mode = WAL")
            self._db.execute("PRAGMA synchronous = NORMAL")  # WAL + NORMAL: durable up to the last checkpoint
            self._db.execute(_SCHEMA)
        except (sqlite3.DatabaseError, OSError) as exc:
            raise SelfCorrectError(f"generation cache {self.path} cannot be used ({exc}); delete it, point "
                                   "SELFCORRECT_CACHE elsewhere, or turn the cache off with --no-cache") from None

    def get_many(self, keys: Iterable[str]) -> dict[str, list[Generation]]:
        keys = list(dict.fromkeys(keys))
        found: dict[str, list[Generation]] = {}
        with self._lock:
            for start in range(0, len(keys), 500):  # stay under SQLite's bound-parameter limit
                chunk = keys[start:start + 500]
                marks = ",".join("?" * len(chunk))
                rows = self._db.execute(f"SELECT key, value FROM generations WHERE key IN ({marks})", chunk)
                found.update((key, _decode(value)) for key, value in rows)
        return found

    def put_many(self, model: str, entries: dict[str, list[Generation]]) -> None:
        now = time.time()
        rows = [(key, model, _encode(gens), now) for key, gens in entries.items()]
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._db.executemany("INSERT OR IGNORE INTO generations VALUES (?, ?, ?, ?)", rows)
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise

    def __len__(self) -> int:
        with self._lock:
            return self._db.execute("SELECT COUNT(*) FROM generations").fetchone()[0]

    def close(self) -> None:
        with self._lock:
            self._db.close()


class CachedBackend(Backend):
    """`backend` behind the generation cache at `path` (default: `default_cache_path()`).

    `hits`, `misses` (requests) and `inner_calls` (generate calls that reached the backend) count what happened.
    """

    def __init__(self, backend: Backend, path: str | Path | None = None) -> None:
        self.inner = backend
        self.name = backend.name
        self.supports_hidden_states = backend.supports_hidden_states
        self.supports_option_scoring = backend.supports_option_scoring
        self.cache = GenerationCache(path or default_cache_path())
        settings = {k: v for k, v in backend.describe().items() if k not in ("name", "model")}  # e.g. the dtype
        fingerprint = model_fingerprint(backend.model_id)
        self._model_key = f"{backend.name}:{fingerprint}" + (f"|{settings}" if settings else "")
        self.hits = 0
        self.misses = 0
        self.inner_calls = 0

    def __getattr__(self, name: str) -> Any:
        """Whatever the wrapper lacks comes from the inner backend (the hf backend's `model`, `tokenizer` and
        `prompt_ids`, which option scoring uses for forward passes), so wrapping changes `generate` only."""
        if name == "inner":  # not set yet (during __init__ or unpickling): no recursion
            raise AttributeError(name)
        return getattr(self.inner, name)

    @property
    def supports_logprobs(self) -> bool:  # type: ignore[override]  # live: the openai backend learns it late
        return self.inner.supports_logprobs

    @property
    def model_id(self) -> str:
        return self.inner.model_id

    def describe(self) -> dict[str, Any]:
        return self.inner.describe()
    def capabilities(self) -> dict[str, str]:
        return self.inner.capabilities()

    def key(self, request: GenerationRequest) -> str:
        return request.cache_key(self._model_key)

    def stats(self) -> dict[str, Any]:
        return {"path": str(self.cache.path), "hits": self.hits, "misses": self.misses,
                "inner_calls": self.inner_calls}

    def generate(self, requests: Sequence[GenerationRequest]) -> list[Generation]:
        keys = [self.key(r) for r in requests]
        found = self.cache.get_many(keys)
        todo = {k: requests[i] for i, k in enumerate(keys) if k not in found}  # each distinct miss once
        self.hits += len(keys) - sum(k in todo for k in keys)
        self.misses += sum(k in todo for k in keys)
        if todo:
            self.inner_calls += 1
            outputs = self.inner.generate(list(todo.values()))
            fresh: dict[str, list[Generation]] = {k: [] for k in todo}
            order = list(todo)
            for gen in outputs:
                fresh[order[gen.request_index]].append(gen)
            for key, gens in fresh.items():
                if len(gens) != todo[key].params.n:
                    raise RuntimeError(f"backend {self.inner.name} returned {len(gens)} samples for "
                                       f"n={todo[key].params.n}")
                gens.sort(key=lambda g: g.sample_index)
            self.cache.put_many(self._model_key, fresh)
            found.update(fresh)
        result = []
        for request_index, key in enumerate(keys):
            for gen in found[key]:
                result.append(replace(gen, request_index=request_index))
        return result

    def close(self) -> None:
        self.cache.close()
        self.inner.close()
