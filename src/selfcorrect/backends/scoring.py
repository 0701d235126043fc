"""Teacher-forced scoring of continuations (e.g. the options of a multiple-choice question) after a shared prompt.

A prompt is run once and its KV cache is copied to each of its continuations, so scoring k options costs one
prompt plus k short continuations, not k full sequences. Logits are computed for the continuation positions only:
the prompt's last position (which predicts a continuation's first token) and the continuation tokens themselves.
On SmolLM2's 49,152-token vocabulary, the old full-sequence pass made float32 logits for every position of every
(question x option) row, about 14 GB for 180 rows of 400 tokens.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from selfcorrect.backends.decode import left_padded, preallocated_cache, run_prompts


def continuation_nlls(model: Any, prompts: Sequence[list[int]], continuations: Sequence[Sequence[list[int]]],
                      pad_id: int) -> list[list[float]]:
    """Mean NLL per token of each continuation of each prompt (`continuations[i]` belong to `prompts[i]`).

    Prompts are left-padded and continuations right-padded behind them; positions come from the mask, so padding
    never shifts a real token (GPT-2's learned positions need that) and the causal mask keeps padding from
    influencing any score. The caller bounds the chunk's memory.
    """

    import torch

    if any(not c for options in continuations for c in options):
        raise ValueError("cannot score an empty continuation")
    device = model.device
    lengths = torch.tensor([len(p) for p in prompts], device=device)
    width = int(lengths.max())
    cont_width = max(len(c) for options in continuations for c in options)
    ids, mask = left_padded(list(prompts), pad_id, device)
    owner = torch.tensor([i for i, options in enumerate(continuations) for _ in options], device=device)
    flat = [c for options in continuations for c in options]
    cont_ids = torch.full((len(flat), cont_width), pad_id, dtype=torch.long)
    cont_mask = torch.zeros((len(flat), cont_width), dtype=torch.long)
    for row, cont in enumerate(flat):
        cont_ids[row, :len(cont)] = torch.tensor(cont)
        cont_mask[row, :len(cont)] = 1
    cont_ids, cont_mask = cont_ids.to(device), cont_mask.to(device)

    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            cache = preallocated_cache(model, width + cont_width)
            first = run_prompts(model, ids, mask, cache).logits[:, -1, :]
            cache.batch_select_indices(owner)  # each continuation starts from its prompt's cache
            rest = None
            if cont_width > 1:  # continuation tokens 1.. are predicted at the positions of tokens ..-2
                steps = cont_width - 1
                rest = model(input_ids=cont_ids[:, :steps],
                             attention_mask=torch.cat([mask[owner], cont_mask[:, :steps]], dim=1),
                             position_ids=lengths[owner, None] + torch.arange(steps, device=device),
                             past_key_values=cache, use_cache=True).logits
    finally:
        model.train(was_training)
    logprobs = torch.log_softmax(first.float(), dim=-1)[owner].gather(1, cont_ids[:, :1])  # each first token
    if rest is not None:
        later = torch.log_softmax(rest.float(), dim=-1).gather(2, cont_ids[:, 1:, None]).squeeze(2)
        logprobs = torch.cat([logprobs, later], dim=1)
    per_row = (-(logprobs * cont_mask).sum(1) / cont_mask.sum(1)).tolist()
    result, start = [], 0
    for options in continuations:
        result.append(per_row[start:start + len(options)])
        start += len(options)
    return result


def continuation_logprobs(model: Any, prompts: Sequence[list[int]], continuations: Sequence[list[int]],
                          pad_id: int) -> list[Any]:
    """Per continuation, the model's whole log-distribution (temperature 1) at each of its tokens, a (len, vocab)
    tensor on the CPU, from one right-padded forward pass over every prompt + continuation (the server's
    `top_logprobs`; it needs every vocabulary entry, so the caller keeps requests few).

    Right padding keeps every real token at its natural position (GPT-2's learned positions need that), and the
    causal mask means the padding after a row can never influence its scores.
    """
    import torch

    sequences = [list(p) + list(c) for p, c in zip(prompts, continuations, strict=True)]
    if any(not c for c in continuations):
        raise ValueError("cannot score an empty continuation")
    width = max(len(s) for s in sequences)
    ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for i, seq in enumerate(sequences):
        ids[i, :len(seq)] = torch.tensor(seq)
        mask[i, :len(seq)] = 1
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            logits = model(input_ids=ids.to(model.device), attention_mask=mask.to(model.device)).logits.float()
    finally:
        model.train(was_training)
    logprobs = torch.log_softmax(logits, dim=-1).cpu()
    return [logprobs[i, len(prompt) - 1:len(prompt) + len(cont) - 1]
            for i, (prompt, cont) in enumerate(zip(prompts, continuations, strict=True))]
