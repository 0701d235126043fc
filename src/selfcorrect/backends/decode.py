"""The `hf` backend's decode loop: batched, per-row seeded, and paying only for rows that are still generating.

Why a loop of our own rather than `model.generate`: a request's output must not depend on which other requests
share its batch, so that a method can batch a whole round (or resume half of one) and still get the samples a lone
request would get. HF draws sampling noise from one global generator for the whole batch. Here every row draws its
own uniforms from a numpy Generator seeded with `request_seed(params.seed, sample_index)` and turns them into tokens
by inverse-CDF sampling: the row's randomness is its own, whatever the batch.

Where the time goes on a real model, and what the loop does about it (numbers: benchmarks/generation_real.py):
- A finished row would keep costing a full forward step until the longest row ends (most of SmolLM2's GSM8K
  answers run to the cap, but the rest end early). Finished rows leave the batch, its attention mask and its KV
  cache once they are an eighth of the rows still decoding, so compaction copies the cache rarely.
- transformers' default cache grows by concatenation, copying every layer's keys and values at every step. Here
  each layer writes into a buffer allocated once for the whole decode and hands attention a view of it.
- Rows are decoded in chunks of similar prompt length (the caller sorts them), so prefill pads little, and rows
  with the same prompt (a request's `n` samples) share one prefill.
- The prompt's logits are computed at the last position only, and hidden states only when a request asks.

Token logprobs and entropies are those of the model's raw distribution (temperature 1, no top-p), whatever the
sampling settings, as `LogprobSummary` promises. `token_ids`, `token_logprobs` and `token_entropies` cover every
generated token, the end-of-sequence token or the one that completed a stop string included.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from selfcorrect.backends.base import GenerationRequest, SamplingParams, request_seed
from selfcorrect.errors import SelfCorrectError

#: Finished rows are evicted once they are at least this share of the rows still in the batch.
EVICT_SHARE = 1 / 8


@dataclass
class Row:
    """One sequence to decode: the request and sample it answers, its prompt ids and its new-token limit."""

    request_index: int
    sample_index: int
    request: GenerationRequest
    prompt_ids: list[int]
    limit: int

    @property
    def params(self) -> SamplingParams:
        return self.request.params


@dataclass
class Decoded:
    """What the loop produced for one chunk, per row in chunk order (tensors on the CPU)."""

    tokens: Any  # (rows, steps) long, padded after each row's end
    logprobs: Any  # (rows, steps) float32
    entropies: Any  # (rows, steps) float32
    produced: list[int]
    hidden: dict[int, Any] | None  # layer -> (rows, hidden) float32, the mean over each row's span


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


def uniforms(rows: list[Row], steps: int) -> np.ndarray:
    """One uniform per row per step, each row from its own seeded Generator (zeros for greedy rows)."""
    table = np.zeros((len(rows), steps), dtype=np.float64)
    for i, row in enumerate(rows):
        if not row.params.greedy:
            rng = np.random.default_rng(request_seed(row.params.seed, row.sample_index))
            table[i] = rng.random(steps)  # a prefix of the row's one stream, whatever `steps` is
    return table


def preallocated_cache(model: Any, capacity: int) -> Any:
    """A transformers cache whose full-attention layers write into buffers allocated once (see module docstring).

    Layers of other kinds (sliding windows, linear attention) keep transformers' own implementation.
    """
    from transformers import DynamicCache
    from transformers.cache_utils import DynamicLayer

    class PreallocatedLayer(DynamicLayer):
        def lazy_initialization(self, key_states: Any, value_states: Any) -> None:
            self.dtype, self.device = key_states.dtype, key_states.device
            batch, heads, _, dim = key_states.shape
            self._keys = key_states.new_empty((batch, heads, capacity, dim))
            self._values = value_states.new_empty((batch, value_states.shape[1], capacity, value_states.shape[-1]))
            self.length = 0
            self.is_initialized = True

        def update(self, key_states: Any, value_states: Any, *args: Any, **kwargs: Any) -> tuple[Any, Any]:
            if not self.is_initialized:
                self.lazy_initialization(key_states, value_states)
            end = self.length + key_states.shape[-2]
            self._keys[:, :, self.length:end] = key_states
            self._values[:, :, self.length:end] = value_states
            self.length = end
            self.keys, self.values = self._keys[:, :, :end], self._values[:, :, :end]
            return self.keys, self.values

        def get_seq_length(self) -> int:
            return self.length if self.is_initialized else 0

        def batch_select_indices(self, indices: Any) -> None:
            if self.is_initialized:
                self._keys, self._values = self._keys[indices], self._values[indices]
                self.keys, self.values = self._keys[:, :, :self.length], self._values[:, :, :self.length]

    cache = DynamicCache(config=model.config)
    cache.layers = [PreallocatedLayer() if type(layer) is DynamicLayer else layer for layer in cache.layers]
    if not cache.layers:  # a config without layer types: layers are made on first use, one per model layer
        cache.layer_class_to_replicate = PreallocatedLayer
    return cache


def decode(model: Any, rows: list[Row], eos_ids: list[int], pad_id: int, stop_check: Any) -> Decoded:
    """Decode one chunk of rows together, from prefill to the last row's stop.

    `stop_check(rows, live, token_lists) -> list[bool]` says which of the `live` rows' text now holds one of their
    stop strings; it is called only for rows that asked for stop strings.
    """
    import torch

    device = model.device
    batch = len(rows)
    lengths = torch.tensor([len(r.prompt_ids) for r in rows], device=device)
    width = int(lengths.max())
    limits = torch.tensor([r.limit for r in rows], device=device)
    steps = int(limits.max())
    input_ids, mask = left_padded([r.prompt_ids for r in rows], pad_id, device, open_columns=steps)
    temperature = torch.tensor([r.params.temperature for r in rows], device=device)
    top_p = torch.tensor([r.params.top_p for r in rows], device=device)
    noise = torch.from_numpy(uniforms(rows, steps)).to(device)
    eos = torch.tensor(eos_ids, dtype=torch.long, device=device)

    cache = preallocated_cache(model, width + steps)
    logits, hidden = _prefill(model, rows, input_ids, mask, cache)

    tokens = torch.full((batch, steps), pad_id, dtype=torch.long, device=device)
    logprobs = torch.zeros((batch, steps), device=device)
    entropies = torch.zeros((batch, steps), device=device)
    produced = torch.zeros(batch, dtype=torch.long, device=device)
    finished = torch.zeros(batch, dtype=torch.bool, device=device)
    alive = torch.arange(batch, device=device)  # chunk index of each row still in the batch, in batch order
    watch = [i for i, r in enumerate(rows) if r.params.stop]
    for step in range(steps):
        raw = torch.log_softmax(logits.float(), dim=-1)
        chosen = choose_tokens(logits, temperature[alive], top_p[alive], noise[alive, step])
        done = finished[alive]
        chosen = torch.where(done, pad_id, chosen)
        tokens[alive, step] = chosen
        logprobs[alive, step] = raw.gather(1, chosen[:, None]).squeeze(1)
        entropies[alive, step] = -(raw.exp() * raw).nansum(-1)  # nansum: tokens masked to -inf add 0 * -inf
        produced[alive] += ~done
        finished[alive] |= torch.isin(chosen, eos) | (produced[alive] >= limits[alive])
        if watch:
            live = [i for i in watch if not finished[i]]
            if live:
                hits = stop_check(rows, live, [tokens[i, :produced[i]].tolist() for i in live])
                finished[[i for i, hit in zip(live, hits, strict=True) if hit]] = True
        done = finished[alive]
        if bool(done.all()):
            break
        if int(done.sum()) >= max(1, EVICT_SHARE * len(alive)):
            keep = (~done).nonzero().squeeze(1)
            cache.batch_select_indices(keep)
            alive, mask, chosen = alive[keep], mask[keep], chosen[keep]
        out = model(input_ids=chosen[:, None], attention_mask=mask[:, :width + step + 1],
                    position_ids=(lengths[alive] + step)[:, None], past_key_values=cache, use_cache=True)
        logits = out.logits[:, -1, :]
    return Decoded(tokens.cpu(), logprobs.cpu(), entropies.cpu(), produced.tolist(), hidden)


def left_padded(prompts: list[list[int]], pad_id: int, device: Any, open_columns: int = 0) -> tuple[Any, Any]:
    """Prompts left-padded to the longest, and their attention mask, already open for `open_columns` tokens to come
    (columns after the prompts, set to 1 for every row: a finished row's later columns are never read)."""
    import torch

    width = max(len(p) for p in prompts)
    input_ids = torch.full((len(prompts), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(prompts), width + open_columns), dtype=torch.long)
    for i, prompt in enumerate(prompts):
        input_ids[i, width - len(prompt):] = torch.tensor(prompt)
        mask[i, width - len(prompt):] = 1
    return input_ids.to(device), mask.to(device)


def run_prompts(model: Any, input_ids: Any, mask: Any, cache: Any, output_hidden_states: bool = False) -> Any:
    """One forward pass over left-padded prompts into `cache`: positions from the mask (padding never shifts a real
    token), logits at the last position only where the model can skip the rest."""
    import inspect

    keep_last = {"logits_to_keep": 1} if "logits_to_keep" in inspect.signature(model.forward).parameters else {}
    width = input_ids.shape[1]
    return model(input_ids=input_ids, attention_mask=mask[:, :width],
                 position_ids=(mask[:, :width].cumsum(-1) - 1).clamp(min=0), past_key_values=cache, use_cache=True,
                 output_hidden_states=output_hidden_states, **keep_last)


def _prefill(model: Any, rows: list[Row], input_ids: Any, mask: Any, cache: Any) -> tuple[Any, Any]:
    """Run each distinct prompt once: the last position's logits, and the requested layers' states averaged over
    each span.

    Rows with the same prompt (the `n` samples of one request: STaSC's N_corr corrections, InSeC's on-policy draws)
    share one prefill, whose KV cache is then copied to each of them, as option scoring does. Hidden states are
    kept only for the layers some row asked for, and only as their per-row span means.
    """
    import torch

    slots: dict[tuple[int, ...], int] = {}
    firsts: list[int] = []  # the first row of each distinct prompt
    owner_list = []
    for i, row in enumerate(rows):
        slot = slots.setdefault(tuple(row.prompt_ids), len(firsts))
        if slot == len(firsts):
            firsts.append(i)
        owner_list.append(slot)
    shared = len(firsts) < len(rows)
    if shared:
        input_ids, mask = input_ids[firsts], mask[firsts]
    layers = sorted({layer for r in rows for layer in r.request.hidden_layers})
    out = run_prompts(model, input_ids, mask, cache, output_hidden_states=bool(layers))
    owner = torch.tensor(owner_list, device=input_ids.device)
    if shared:
        cache.batch_select_indices(owner)
    hidden = None
    if layers:
        states = out.hidden_states
        if not all(-len(states) <= layer < len(states) for layer in layers):
            raise SelfCorrectError(f"hidden_layers {layers} out of range: this model has {len(states)} hidden "
                                   f"states (0 = embeddings, {len(states) - 1} or -1 = last layer)")
        spans = [max(1, min(r.request.hidden_span, len(r.prompt_ids))) for r in rows]
        hidden = {layer: torch.stack([states[layer][owner_list[i], -span:].float().mean(0)
                                      for i, span in enumerate(spans)]).cpu()
                  for layer in layers}
        del states
    return out.logits[:, -1, :][owner], hidden

