"""The `hf` backend: any local (or hub) causal LM run with transformers, through our own decode loop.

The loop itself (why not `model.generate`, per-row seeds, eviction of finished rows, the preallocated KV cache) is
in `decode.py`; this module loads the model, renders prompts, and splits a call into chunks whose memory is bounded:
rows are sorted by prompt length, so each chunk pads little, and a chunk holds as many rows as `batch_size` and
`memory_mb` allow (its KV cache, its prefill activations and its vocabulary-wide logits, estimated from the config).

`text` is decoded without special tokens and cut before the first stop string.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from selfcorrect.backends.base import Backend, Generation, GenerationRequest, truncate_at_stop
from selfcorrect.backends.decode import Decoded, Row, decode
from selfcorrect.errors import SelfCorrectError

_DTYPES = ("float32", "float16", "bfloat16", "auto")


def native_bf16(device: str) -> bool:
    """Whether `device` computes bfloat16 natively: a CUDA GPU that says so, or a CPU with AVX512-BF16 or AMX."""
    import torch

    if device.startswith("cuda"):
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    try:
        flags = Path("/proc/cpuinfo").read_text().split()
    except OSError:  # not Linux: no way to tell, so no surprise
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


#: `dtype: auto` picks bfloat16 only for models at least this large: tiny models are bound by per-step overhead,
#: so bfloat16 buys them no speed and costs them precision.
AUTO_BF16_MIN_PARAMETERS = 50_000_000


def resolve_dtype(requested: str, device: str, parameters: int) -> str:
    """The dtype to run in: as asked, or for `auto` bfloat16 where the device computes it natively, else float32."""
    if requested != "auto":
        return requested
    return "bfloat16" if parameters >= AUTO_BF16_MIN_PARAMETERS and native_bf16(device) else "float32"


class HFBackend(Backend):
    """A transformers causal LM: a built-in model name (`selfcorrect models`), a local folder (model + tokenizer),
    or a hub id when the hub is reachable.

    `batch_size` bounds the rows (requests x n) decoded together and `memory_mb` the working memory of one chunk
    (KV cache, activations, logits); `dtype="auto"` is resolved once at load and kept in `self.dtype`.
    `trust_remote_code` stays off unless asked.
    """

    name = "hf"
    supports_logprobs = True
    supports_hidden_states = True
    supports_option_scoring = True
    resolves_builtin_models = True

    def __init__(self, model: str = "sandbox", device: str = "cpu", dtype: str = "auto", batch_size: int = 256,
                 memory_mb: int = 2048, trust_remote_code: bool = False, revision: str | None = None) -> None:
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
        from selfcorrect.models import resolve_model

        if dtype not in _DTYPES:
            raise SelfCorrectError(f"hf backend: unknown dtype {dtype!r}; known: {', '.join(_DTYPES)}")
        model = str(resolve_model(model))
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()  # one labelled bar per phase is ours to draw
        options = {"revision": revision, "trust_remote_code": trust_remote_code}
        try:
            tokenizer = AutoTokenizer.from_pretrained(model, **options)
            hf_model = AutoModelForCausalLM.from_pretrained(
                model, dtype=torch.float32 if dtype == "auto" else getattr(torch, dtype), **options)
        except (OSError, ValueError) as exc:
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise SelfCorrectError(f"could not load model {model!r}: {reason}") from None
        resolved = resolve_dtype(dtype, device, hf_model.num_parameters())
        hf_model = hf_model.to(device=device, dtype=getattr(torch, resolved))
        path = Path(model).expanduser()
        source = str(path.resolve()) if path.is_dir() else model
        self._setup(hf_model, tokenizer, f"{source}@{revision}" if revision else source, batch_size, memory_mb)

    @classmethod
    def from_objects(cls, model: Any, tokenizer: Any, name: str = "in-memory", batch_size: int = 256,
                     memory_mb: int = 2048) -> HFBackend:
        """Wrap an already-loaded model and tokenizer (e.g. a model in training), so it samples through this loop."""
        backend = cls.__new__(cls)
        backend._setup(model, tokenizer, name, batch_size, memory_mb)
        return backend

    def _setup(self, model: Any, tokenizer: Any, model_id: str, batch_size: int, memory_mb: int) -> None:
        if batch_size < 1 or memory_mb < 1:
            raise SelfCorrectError(f"hf backend: batch_size and memory_mb must be >= 1, got {batch_size}, {memory_mb}")
        self.model = model
        self.tokenizer = tokenizer
        self.batch_size = batch_size
        self.memory_bytes = memory_mb * 2**20
        self.dtype = str(model.dtype).removeprefix("torch.")
        self._model_id = model_id
        configured = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
        configured = [configured] if isinstance(configured, int) else list(configured or [])
        self.eos_ids = sorted({i for i in [tokenizer.eos_token_id, *configured] if i is not None})
        pad = tokenizer.pad_token_id
        self.pad_id = pad if pad is not None else (self.eos_ids[0] if self.eos_ids else 0)
        self._context = getattr(model.config, "max_position_embeddings", None)

    @property
    def model_id(self) -> str:
        return self._model_id

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "dtype": self.dtype, "device": str(self.model.device)}

    def generate(self, requests: Sequence[GenerationRequest]) -> list[Generation]:
        import torch

        rows = []
        for request_index, request in enumerate(requests):
            prompt_ids = self.prompt_ids(request)
            limit = self._new_token_limit(request, request_index, len(prompt_ids))
            rows += [Row(request_index, sample, request, prompt_ids, limit) for sample in range(request.params.n)]
        order = sorted(range(len(rows)), key=lambda i: len(rows[i].prompt_ids))
        results: list[Generation | None] = [None] * len(rows)
        was_training = self.model.training
        self.model.eval()  # dropout would make samples irreproducible; restored for an in-training model
        try:
            with torch.inference_mode():
                for chunk in self._chunks(order, lambda chunk: self._decode_bytes([rows[i] for i in chunk])):
                    chunk_rows = [rows[i] for i in chunk]
                    decoded = decode(self.model, chunk_rows, self.eos_ids, self.pad_id, self._stop_hits)
                    for i, gen in zip(chunk, self._generations(chunk_rows, decoded), strict=True):
                        results[i] = gen
        finally:
            self.model.train(was_training)
        return [gen for gen in results if gen is not None]

    def _chunks(self, order: list[int], cost: Any) -> list[list[int]]:
        """Consecutive runs of `order` (indices sorted by prompt length), each within `batch_size` items and within
        the memory budget by `cost(indices) -> bytes`; an item too big on its own still gets a chunk.

        Runs are as even as the budget allows: 64 rows that fit 63 at a time become two chunks of 32, not 63 and a
        lone row that would then decode at batch 1 for as long as the others did together.
        """
        greedy: list[list[int]] = []
        current: list[int] = []
        for i in order:
            trial = [*current, i]
            if current and (len(trial) > self.batch_size or cost(trial) > self.memory_bytes):
                greedy.append(current)
                trial = [i]
            current = trial
        greedy = [*greedy, current] if current else greedy
        size = -(-len(order) // max(1, len(greedy)))
        even = [order[start:start + size] for start in range(0, len(order), size)]
        if len(even) == len(greedy) and all(len(c) == 1 or cost(c) <= self.memory_bytes for c in even):
            return even
        return greedy

    def _decode_bytes(self, rows: list[Row]) -> int:
        width = max(len(r.prompt_ids) for r in rows)
        steps = max(r.limit for r in rows)
        return len(rows) * self.row_bytes(width, steps, any(r.request.hidden_layers for r in rows))

    def score_continuations(self, prompts: Sequence[list[int]],
                            continuations: Sequence[Sequence[list[int]]]) -> tuple[list[list[float]], int]:
        """Mean NLL per token of each continuation after its prompt (teacher-forced), and the forward batches run.

        Each prompt runs once and shares its KV cache with its continuations (`scoring.py`); chunks of prompts of
        similar length stay within the memory budget.
        """
        from selfcorrect.backends.scoring import continuation_nlls

        vocab = self.model.config.get_text_config().vocab_size

        def cost(chunk: list[int]) -> int:
            width = max(len(prompts[i]) for i in chunk)
            extra = max(len(c) for i in chunk for c in continuations[i])
            rows = sum(len(continuations[i]) for i in chunk)
            return rows * (self.row_bytes(width, extra, False) + extra * vocab * 12)

        order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
        results: list[list[float]] = [[] for _ in prompts]
        chunks = self._chunks(order, cost)
        for chunk in chunks:
            nlls = continuation_nlls(self.model, [prompts[i] for i in chunk], [continuations[i] for i in chunk],
                                     self.pad_id)
            for i, values in zip(chunk, nlls, strict=True):
                results[i] = values
        return results, len(chunks)

    def row_bytes(self, width: int, steps: int, hidden: bool) -> int:
        """Memory one row costs in a chunk: its KV cache, its prefill activations, its vocabulary-wide step logits
        (about four float32 copies: logits, log-probabilities, probabilities, products) and, when asked, the
        hidden states of every layer over its prompt."""
        config = self.model.config.get_text_config()
        size = self.model.dtype.itemsize
        layers, model_dim = config.num_hidden_layers, config.hidden_size
        heads = config.num_attention_heads
        kv_heads = getattr(config, "num_key_value_heads", None) or heads
        head_dim = getattr(config, "head_dim", None) or model_dim // heads
        inner = getattr(config, "intermediate_size", None) or getattr(config, "n_inner", None) or 4 * model_dim
        kv = 2 * layers * kv_heads * head_dim * (width + steps) * size
        prefill = width * (3 * inner + 6 * model_dim) * 4 + heads * width * width * 4
        logits = 4 * config.vocab_size * 4
        states = (layers + 1) * width * model_dim * size if hidden else 0
        return kv + prefill + logits + states

    def prompt_ids(self, request: GenerationRequest) -> list[int]:
        """The prompt's token ids: chat messages through the chat template, raw prompts as they are.

        A tokenizer without a chat template gets the message contents joined by newlines, treated as a raw prompt.
        Template output already holds any BOS token, so it is tokenized without adding special tokens.
        """
        if request.messages is not None and self.tokenizer.chat_template:
            text = self.tokenizer.apply_chat_template(request.messages, add_generation_prompt=True, tokenize=False)
            ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        else:
            text = request.prompt if request.messages is None else "\n".join(m["content"] for m in request.messages)
            ids = self.tokenizer(text)["input_ids"]
        if not ids:
            raise SelfCorrectError(f"request {request.id or '(no id)'}: the prompt renders to no tokens")
        return ids

    def _new_token_limit(self, request: GenerationRequest, index: int, prompt_length: int) -> int:
        """max_new_tokens, cut where the model's context ends (finish_reason "length" there, as vLLM does)."""
        if self._context is None:
            return request.params.max_new_tokens
        room = self._context - prompt_length
        if room < 1:
            raise SelfCorrectError(f"request {request.id or index}: the prompt has {prompt_length} tokens, the "
                                   f"model's context is {self._context}")
        return min(request.params.max_new_tokens, room)

    def _stop_hits(self, rows: list[Row], live: list[int], token_lists: list[list[int]]) -> list[bool]:
        """Which of the `live` rows' texts now hold one of their stop strings (checked after every token)."""
        texts = self.tokenizer.batch_decode(token_lists, skip_special_tokens=True)
        return [any(s and s in text for s in rows[i].params.stop) for i, text in zip(live, texts, strict=True)]

    def _generations(self, rows: list[Row], decoded: Decoded) -> list[Generation]:
        ids = [decoded.tokens[i, :n].tolist() for i, n in enumerate(decoded.produced)]
        texts = self.tokenizer.batch_decode(ids, skip_special_tokens=True)
        eos = set(self.eos_ids)
        results = []
        for i, (row, text, n) in enumerate(zip(rows, texts, decoded.produced, strict=True)):
            cut = truncate_at_stop(text, row.params.stop)
            stopped = cut != text or (n > 0 and ids[i][-1] in eos)
            states = None
            if row.request.hidden_layers and decoded.hidden is not None:
                states = {layer: decoded.hidden[layer][i].tolist() for layer in row.request.hidden_layers}
            results.append(Generation(text=cut, finish_reason="stop" if stopped else "length", token_ids=ids[i],
                                      token_logprobs=decoded.logprobs[i, :n].tolist(),
                                      token_entropies=decoded.entropies[i, :n].tolist(), hidden_states=states,
                                      request_index=row.request_index, sample_index=row.sample_index))
        return results
