"""The `hf` backend: any local (or hub) causal LM run with transformers, with our own batched decode loop.

Why not `model.generate`: a request's output must not depend on which other requests share its batch, so that a
method can batch a whole round (or resume half of one) and still get the samples a lone request would get. HF
draws sampling noise from one global generator for the whole batch, so one row's sample depends on the others.
Here every row draws its own uniforms from a numpy Generator seeded with `request_seed(params.seed, sample_index)`
and turns them into tokens by inverse-CDF sampling: the row's randomness is its own, whatever the batch.

The loop is the textbook one: left padding, an explicit attention mask, position ids computed from that mask (GPT-2
has learned absolute positions, so left padding must not shift them), a KV cache, and rows that finished simply
stop being recorded. Each step is a few tensor operations over the whole batch (only rows that asked for stop
strings are decoded to text per step), so it is as fast as `generate` greedy and faster sampled (see
benchmarks/generation.py).

Token logprobs and entropies are those of the model's raw distribution (temperature 1, no top-p), whatever the
sampling settings, as `LogprobSummary` promises. `token_ids`, `token_logprobs` and `token_entropies` cover every
generated token, the end-of-sequence token or the one that completed a stop string included; `text` is decoded
without special tokens and cut before the first stop string.
"""

from __future__ import annotations

import inspect
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from selfcorrect.backends.base import (
    Backend,
    Generation,
    GenerationRequest,
    SamplingParams,
    request_seed,
    truncate_at_stop,
)
from selfcorrect.errors import SelfCorrectError

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json")
_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?")
_DTYPES = ("float32", "float16", "bfloat16", "auto")


@dataclass
class _Row:
    """One sequence to decode: the request and sample it answers, and its prompt ids."""

    request_index: int
    sample_index: int
    request: GenerationRequest
    prompt_ids: list[int]

    @property
    def params(self) -> SamplingParams:
        return self.request.params


def check_model_source(model: str) -> None:
    """Fail early, in one line, on a folder that is not there or has no tokenizer, rather than deep in transformers."""
    path = Path(model).expanduser()
    if path.is_dir():
        if not any((path / name).exists() for name in TOKENIZER_FILES):
            raise SelfCorrectError(f"model folder {path} has no tokenizer files (expected one of "
                                   f"{', '.join(TOKENIZER_FILES)}); save the tokenizer next to the model")
    elif path.exists():
        raise SelfCorrectError(f"model {model} is a file, not a model folder")
    elif model.startswith((".", "/", "~")) or not _HUB_ID.fullmatch(model):
        raise SelfCorrectError(f"model folder {model} does not exist (and is not a hub id like 'org/name')")


def choose_tokens(logits: Any, temperature: Any, top_p: Any, uniforms: Any) -> Any:
    """Next token per row: argmax where temperature is 0, else inverse-CDF sampling with the row's own uniform.

    Rows with top_p < 1 sample from the nucleus (most likely tokens whose mass before them is below top_p, in a
    stable descending order); other rows from the whole vocabulary in id order. Which branch a row takes depends
    only on its own settings, so batch mates never change a row's token.
    """
    import torch

    sampled = temperature > 0
    tokens = torch.empty(logits.shape[0], dtype=torch.long, device=logits.device)
    greedy = (~sampled).nonzero().squeeze(1)
    if greedy.numel():
        tokens[greedy] = logits[greedy].argmax(dim=-1)

    def probs(rows: Any) -> Any:
        return torch.softmax(logits[rows].float() / temperature[rows, None], dim=-1)

    plain = (sampled & (top_p >= 1)).nonzero().squeeze(1)
    if plain.numel():
        tokens[plain] = _inverse_cdf(probs(plain), uniforms[plain])
    nucleus = (sampled & (top_p < 1)).nonzero().squeeze(1)
    if nucleus.numel():
        # Non-negative float32s order exactly like their bit patterns read as int32, and integer sort is faster.
        ranked, ids = probs(nucleus).view(torch.int32).sort(dim=-1, descending=True, stable=True)
        ranked = ranked.view(torch.float32)
        kept = ranked * (ranked.cumsum(dim=-1) - ranked < top_p[nucleus, None])
        tokens[nucleus] = ids.gather(1, _inverse_cdf(kept, uniforms[nucleus])[:, None]).squeeze(1)
    return tokens


def _inverse_cdf(probs: Any, uniforms: Any) -> Any:
    """Per row, the first index whose cumulative mass exceeds uniform x total (unnormalised probs are fine).

    The target is kept strictly below the total, so rounding can never pick past the last token with mass.
    """
    import torch

    cdf = probs.cumsum(dim=-1)
    total = cdf[:, -1:]
    targets = torch.minimum(uniforms[:, None].to(cdf.dtype) * total, torch.nextafter(total, torch.zeros_like(total)))
    return torch.searchsorted(cdf, targets, right=True).squeeze(1)


class HFBackend(Backend):
    """A transformers causal LM. `model` is a local folder (model + tokenizer) or a hub id when the hub is reachable.

    `batch_size` bounds the rows (requests x n) decoded together; `trust_remote_code` stays off unless asked.
    """

    name = "hf"
    supports_logprobs = True
    supports_hidden_states = True

    def __init__(self, model: str, device: str = "cpu", dtype: str = "float32", batch_size: int = 256,
                 trust_remote_code: bool = False, revision: str | None = None) -> None:
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
        model = str(model)
        check_model_source(model)
        if dtype not in _DTYPES:
            raise SelfCorrectError(f"hf backend: unknown dtype {dtype!r}; known: {', '.join(_DTYPES)}")
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        options = {"revision": revision, "trust_remote_code": trust_remote_code}
        try:
            tokenizer = AutoTokenizer.from_pretrained(model, **options)
            hf_model = AutoModelForCausalLM.from_pretrained(
                model, dtype=dtype if dtype == "auto" else getattr(torch, dtype), **options)
        except (OSError, ValueError) as exc:
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise SelfCorrectError(f"could not load model {model!r}: {reason}") from None
        path = Path(model).expanduser()
        source = str(path.resolve()) if path.is_dir() else model
        self._setup(hf_model.to(device), tokenizer, f"{source}@{revision}" if revision else source, batch_size)

    @classmethod
    def from_objects(cls, model: Any, tokenizer: Any, name: str = "in-memory", batch_size: int = 256) -> HFBackend:
        """Wrap an already-loaded model and tokenizer (e.g. a model in training), so it samples through this loop."""
        backend = cls.__new__(cls)
        backend._setup(model, tokenizer, name, batch_size)
        return backend

    def _setup(self, model: Any, tokenizer: Any, model_id: str, batch_size: int) -> None:
        if batch_size < 1:
            raise SelfCorrectError(f"hf backend: batch_size must be >= 1, got {batch_size}")
        self.model = model
        self.tokenizer = tokenizer
        self.batch_size = batch_size
        self._model_id = model_id
        configured = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
        configured = [configured] if isinstance(configured, int) else list(configured or [])
        self.eos_ids = sorted({i for i in [tokenizer.eos_token_id, *configured] if i is not None})
        pad = tokenizer.pad_token_id
        self.pad_id = pad if pad is not None else (self.eos_ids[0] if self.eos_ids else 0)
        self._keeps_last_logits = "logits_to_keep" in inspect.signature(model.forward).parameters
        self._context = getattr(model.config, "max_position_embeddings", None)

    @property
    def model_id(self) -> str:
        return self._model_id

    def generate(self, requests: Sequence[GenerationRequest]) -> list[Generation]:
        import torch

        rows = []
        for request_index, request in enumerate(requests):
            prompt_ids = self.prompt_ids(request)
            rows += [_Row(request_index, sample, request, prompt_ids) for sample in range(request.params.n)]
        was_training = self.model.training
        self.model.eval()  # dropout would make samples irreproducible; restored for an in-training model
        try:
            with torch.inference_mode():
                return [gen for start in range(0, len(rows), self.batch_size)
                        for gen in self._decode(rows[start:start + self.batch_size])]
        finally:
            self.model.train(was_training)

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

    def _decode(self, rows: list[_Row]) -> list[Generation]:
        """Decode one chunk of rows together, from prefill to the last row's stop."""
        import torch

        device = self.model.device
        batch = len(rows)
        lengths = torch.tensor([len(r.prompt_ids) for r in rows], device=device)
        width = int(lengths.max())
        limits = torch.tensor([self._new_token_limit(r) for r in rows], device=device)
        steps = int(limits.max())
        input_ids, mask = self._left_padded(rows, width, steps)
        temperature = torch.tensor([r.params.temperature for r in rows], device=device)
        top_p = torch.tensor([r.params.top_p for r in rows], device=device)
        uniforms = torch.from_numpy(self._uniforms(rows, steps)).to(device)
        eos = torch.tensor(self.eos_ids, dtype=torch.long, device=device)

        layers = {layer for r in rows for layer in r.request.hidden_layers}
        extra = {"logits_to_keep": 1} if self._keeps_last_logits else {}
        out = self.model(input_ids=input_ids, attention_mask=mask[:, :width],
                         position_ids=(mask[:, :width].cumsum(-1) - 1).clamp(min=0), use_cache=True,
                         output_hidden_states=bool(layers), **extra)
        hidden = out.hidden_states if layers else None
        if hidden is not None and not all(-len(hidden) <= layer < len(hidden) for layer in layers):
            raise SelfCorrectError(f"hidden_layers {sorted(layers)} out of range: this model has {len(hidden)} "
                                   f"hidden states (0 = embeddings, {len(hidden) - 1} or -1 = last layer)")
        past, logits = out.past_key_values, out.logits[:, -1, :]

        tokens = torch.full((batch, steps), self.pad_id, dtype=torch.long, device=device)
        logprobs = torch.zeros((batch, steps), device=device)
        entropies = torch.zeros((batch, steps), device=device)
        produced = torch.zeros(batch, dtype=torch.long, device=device)
        finished = torch.zeros(batch, dtype=torch.bool, device=device)
        watch = [i for i, r in enumerate(rows) if r.params.stop]
        for step in range(steps):
            raw = torch.log_softmax(logits.float(), dim=-1)
            chosen = choose_tokens(logits, temperature, top_p, uniforms[:, step])
            chosen = torch.where(finished, self.pad_id, chosen)
            tokens[:, step] = chosen
            logprobs[:, step] = raw.gather(1, chosen[:, None]).squeeze(1)
            entropies[:, step] = -(raw.exp() * raw).nansum(-1)  # nansum: tokens masked to -inf add 0 * -inf
            produced += ~finished
            finished |= torch.isin(chosen, eos) | (produced >= limits)
            if watch:
                self._stop_strings(rows, watch, tokens, produced, finished)
            if bool(finished.all()):
                break
            out = self.model(input_ids=chosen[:, None], attention_mask=mask[:, :width + step + 1],
                             position_ids=(lengths + step)[:, None], past_key_values=past, use_cache=True)
            past, logits = out.past_key_values, out.logits[:, -1, :]
        return self._generations(rows, tokens, logprobs, entropies, produced, hidden)

    def _left_padded(self, rows: list[_Row], width: int, steps: int) -> tuple[Any, Any]:
        """Prompt ids padded on the left to `width`, and an attention mask already open for `steps` new tokens."""
        import torch

        input_ids = torch.full((len(rows), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(rows), width + steps), dtype=torch.long)
        for i, row in enumerate(rows):
            input_ids[i, width - len(row.prompt_ids):] = torch.tensor(row.prompt_ids)
            mask[i, width - len(row.prompt_ids):] = 1
        return input_ids.to(self.model.device), mask.to(self.model.device)

    def _new_token_limit(self, row: _Row) -> int:
        """max_new_tokens, cut where the model's context ends (finish_reason "length" there, as vLLM does)."""
        if self._context is None:
            return row.params.max_new_tokens
        room = self._context - len(row.prompt_ids)
        if room < 1:
            raise SelfCorrectError(f"request {row.request.id or row.request_index}: the prompt has "
                                   f"{len(row.prompt_ids)} tokens, the model's context is {self._context}")
        return min(row.params.max_new_tokens, room)

    def _uniforms(self, rows: list[_Row], steps: int) -> np.ndarray:
        """One uniform per row per step, each row from its own seeded Generator (zeros for greedy rows)."""
        table = np.zeros((len(rows), steps), dtype=np.float64)
        for i, row in enumerate(rows):
            if not row.params.greedy:
                rng = np.random.default_rng(request_seed(row.params.seed, row.sample_index))
                table[i] = rng.random(steps)  # a prefix of the row's one stream, whatever `steps` is
        return table

    def _stop_strings(self, rows: list[_Row], watch: list[int], tokens: Any, produced: Any, finished: Any) -> None:
        """Mark rows whose text now holds one of their stop strings (text is checked after every token)."""
        live = [i for i in watch if not finished[i]]
        if not live:
            return
        texts = self.tokenizer.batch_decode([tokens[i, :produced[i]].tolist() for i in live], skip_special_tokens=True)
        for i, text in zip(live, texts, strict=True):
            if any(s and s in text for s in rows[i].params.stop):
                finished[i] = True

    def _generations(self, rows: list[_Row], tokens: Any, logprobs: Any, entropies: Any, produced: Any,
                     hidden: Any) -> list[Generation]:
        counts = produced.tolist()
        ids = [tokens[i, :n].tolist() for i, n in enumerate(counts)]
        texts = self.tokenizer.batch_decode(ids, skip_special_tokens=True)
        eos = set(self.eos_ids)
        results = []
        for i, (row, text, n) in enumerate(zip(rows, texts, counts, strict=True)):
            cut = truncate_at_stop(text, row.params.stop)
            stopped = cut != text or (n > 0 and ids[i][-1] in eos)
            states = None
            if row.request.hidden_layers:
                span = max(1, min(row.request.hidden_span, len(row.prompt_ids)))
                states = {layer: hidden[layer][i, -span:].float().mean(0).tolist()
                          for layer in row.request.hidden_layers}
            results.append(Generation(text=cut, finish_reason="stop" if stopped else "length", token_ids=ids[i],
                                      token_logprobs=logprobs[i, :n].tolist(),
                                      token_entropies=entropies[i, :n].tolist(), hidden_states=states,
                                      request_index=row.request_index, sample_index=row.sample_index))
        return results
