"""Teacher-forced option scoring: the mean NLL of each answer option given the conversation so far.

This is what the "logit confidence" of arXiv 2406.02378 needs (exp(−mean NLL) of each option, normalised over the
options; see analysis/uncertainty.option_confidence). It is a scoring call, not a generation: the conversation is
rendered exactly as the next generation request would be (the backend's chat template and generation prompt),
then each option string is scored after it by the backend (`score_continuations`: the prompt runs once and its
KV cache is shared by the options; logits only at the option positions).

Only a backend with `supports_option_scoring` (the `hf` backend) can do this. API backends (openai, vllm's server)
return logprobs of what they sampled, not of an arbitrary continuation, so they cannot score options here; the run
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
    if backend.supports_option_scoring:
        return None
    return (f"backend {backend.name!r} cannot score option likelihoods (teacher-forced scoring needs a backend "
            "with access to the model, like hf)")


def score_options(backend: Any, trajectories: Sequence[Trajectory], round_index: int) -> int:
    """Store the mean NLL of every option, given each trajectory's conversation before its round-`round_index`
    answer, in `metadata["option_nll"][str(round_index)]`. Expects each trajectory to end with that answer.
    Returns the number of forward batches run (0 when no trajectory is multiple choice)."""
    scored, prompts, options = [], [], []
    for traj in trajectories:
        strings = option_strings(traj.example)
        if strings is None:
            continue
        scored.append(traj)
        prompts.append(backend.prompt_ids(GenerationRequest(SamplingParams(), messages=traj.messages()[:-1],
                                                            id=traj.id)))
        options.append([backend.tokenizer(option, add_special_tokens=False)["input_ids"] for option in strings])
    if not scored:
        return 0
    nlls, batches = backend.score_continuations(prompts, options)
    for traj, values in zip(scored, nlls, strict=True):
        traj.metadata.setdefault("option_nll", {})[str(round_index)] = values
    return batches
