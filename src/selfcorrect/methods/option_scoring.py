"""Teacher-forced option scoring: the mean NLL of each answer option given the conversation so far.

This is what the "logit confidence" of arXiv 2406.02378 needs (exp(−mean NLL) of each option, normalised over the
options; see analysis/uncertainty.option_confidence). It is a scoring call, not a generation: the conversation is
rendered exactly as the next generation request would be (the backend's chat template and generation prompt),
then each option string is appended and its tokens scored in one forward pass.

Only the `hf` backend exposes a model to run forward passes through. API backends (openai, vllm's server) return
logprobs of what they sampled, not of an arbitrary continuation, so they cannot score options here; the run
summary says so instead of reporting a number.

The option string scored is `(<letter>) <option text>`, the format BBQ questions present. It is tokenized on its
own and appended to the prompt's ids, so a tokenizer that would merge across the boundary scores a slightly
different split than joint tokenization would; every option is treated alike.
"""

from __future__ import annotations

import string
from collections.abc import Sequence
from typing import Any

from selfcorrect.backends.base import Backend, GenerationRequest, SamplingParams
from selfcorrect.trajectory import Example, Trajectory


def option_strings(example: Example) -> list[str] | None:
    """`["(a) grandfather", "(b) grandson", ...]`, or None when the example is not multiple choice."""
    options = example.fields.get("options")
    if not isinstance(options, list) or not options:
        return None
    return [f"({letter}) {option}" for letter, option in zip(string.ascii_lowercase, options, strict=False)]


def cannot_score(backend: Backend) -> str | None:
    """Why `backend` cannot score options (one line for the summary or an error), or None when it can."""
    if backend.name == "hf" and hasattr(backend, "model") and hasattr(backend, "prompt_ids"):
        return None
    return (f"backend {backend.name!r} cannot score option likelihoods (teacher-forced scoring needs the hf "
            "backend's model)")


def score_options(backend: Any, trajectories: Sequence[Trajectory], round_index: int) -> int:
    """Store the mean NLL of every option, given each trajectory's conversation before its round-`round_index`
    answer, in `metadata["option_nll"][str(round_index)]`. Expects each trajectory to end with that answer.
    Returns the number of forward batches run (0 when no trajectory is multiple choice)."""
    rows: list[tuple[Trajectory, int, list[int], list[int]]] = []
    for traj in trajectories:
        options = option_strings(traj.example)
        if options is None:
            continue
        request = GenerationRequest(SamplingParams(), messages=traj.messages()[:-1], id=traj.id)
        prompt = backend.prompt_ids(request)
        for index, option in enumerate(options):
            rows.append((traj, index, prompt, backend.tokenizer(option, add_special_tokens=False)["input_ids"]))
    nlls = []
    batches = 0
    for start in range(0, len(rows), backend.batch_size):
        chunk = rows[start:start + backend.batch_size]
        nlls += continuation_nlls(backend.model, [r[2] for r in chunk], [r[3] for r in chunk], backend.pad_id)
        batches += 1
    for (traj, index, _, _), nll in zip(rows, nlls, strict=True):
        per_round = traj.metadata.setdefault("option_nll", {})
        per_round.setdefault(str(round_index), [None] * len(option_strings(traj.example) or []))[index] = nll
    return batches


def continuation_nlls(model: Any, prompts: Sequence[list[int]], continuations: Sequence[list[int]],
                      pad_id: int) -> list[float]:
    """Mean NLL per token of each continuation after its prompt, in one right-padded forward pass."""
    import torch

    rows = continuation_logprobs(model, prompts, continuations, pad_id)
    return [float(-row[torch.arange(len(cont)), torch.tensor(cont)].mean())
            for row, cont in zip(rows, continuations, strict=True)]


def continuation_logprobs(model: Any, prompts: Sequence[list[int]], continuations: Sequence[list[int]],
                          pad_id: int) -> list[Any]:
    """Per continuation, the model's log-distribution (temperature 1) at each of its tokens, a (len, vocab)
    tensor on the CPU, from one right-padded forward pass over every prompt + continuation.

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
