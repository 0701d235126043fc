"""The `vllm` backend: vLLM's offline engine (`vllm.LLM`) on one or more CUDA GPUs, for real models at scale.

Optional: `pip install 'selfcorrect[vllm]'` on a machine with a CUDA GPU; vLLM is imported only when the backend is
built, so the rest of selfcorrect never needs it.

A round is ONE `LLM.generate` call with one vLLM `SamplingParams` per request (`SamplingParams.to_vllm`: `n`, the
request's own seed, logprobs of the sampled tokens), so vLLM schedules the whole round together while each request
keeps its own random stream. Prompts are passed as token ids rendered exactly as the hf backend renders them (chat
template without a second BOS), so both backends see the same prompt tokens. vLLM's default logprobs mode is the raw
model distribution, as `Generation.token_logprobs` promises. Hidden states are not exposed by vLLM's generate API;
hidden-state probes use the hf backend.

Greedy outputs can still differ from the hf backend's in late digits of the logits (other kernels, bf16), which can
flip near-ties; compare backends on accuracies, not on byte-identical texts.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from selfcorrect.backends.base import Backend, Generation, GenerationRequest, SamplingParams
from selfcorrect.errors import SelfCorrectError

INSTALL_HINT = "pip install 'selfcorrect[vllm]' on a machine with a CUDA GPU"


def vllm_sampling_params(params: SamplingParams, factory: Callable[..., Any]) -> Any:
    """Our SamplingParams as vLLM's (`factory` is `vllm.SamplingParams`; tests pass a stand-in)."""
    return factory(**params.to_vllm())


def sampled_logprobs(completion: Any) -> list[float] | None:
    """Logprob of each generated token from a CompletionOutput: `logprobs[i]` maps token id -> Logprob."""
    positions = getattr(completion, "logprobs", None)
    if positions is None:
        return None
    values = []
    for position, token_id in zip(positions, completion.token_ids, strict=False):
        entry = position.get(token_id) if position is not None else None
        if entry is None:
            return None
        values.append(float(getattr(entry, "logprob", entry)))
    return values


def parse_outputs(outputs: Sequence[Any], requests: Sequence[GenerationRequest]) -> list[Generation]:
    """vLLM RequestOutputs (one per request, in request order) -> Generations ordered by request, then sample."""
    if len(outputs) != len(requests):
        raise RuntimeError(f"vLLM returned {len(outputs)} outputs for {len(requests)} requests")
    generations = []
    for request_index, (request, output) in enumerate(zip(requests, outputs, strict=True)):
        completions = sorted(output.outputs, key=lambda c: c.index)
        if len(completions) != request.params.n:
            raise RuntimeError(f"vLLM returned {len(completions)} samples for n={request.params.n}")
        for sample_index, completion in enumerate(completions):
            generations.append(Generation(
                text=completion.text, finish_reason="length" if completion.finish_reason == "length" else "stop",
                token_ids=list(completion.token_ids), token_logprobs=sampled_logprobs(completion),
                request_index=request_index, sample_index=sample_index))
    return generations


class VLLMBackend(Backend):
    """A model served by vLLM in this process. Options are `vllm.LLM`'s own; `seed` seeds the engine (each request
    still carries its own seed). `tensor_parallel_size` > 1 splits the model over that many GPUs."""

    name = "vllm"
    supports_logprobs = True
    supports_hidden_states = False

    def __init__(self, model: str, tensor_parallel_size: int = 1, gpu_memory_utilization: float = 0.9,
                 dtype: str = "auto", max_model_len: int | None = None, seed: int = 0,
                 trust_remote_code: bool = False) -> None:
        try:
            import vllm
        except ImportError as exc:
            raise SelfCorrectError(f"the vllm backend needs vLLM, which is not installed ({exc.name} is missing): "
                                   f"{INSTALL_HINT}") from None
        llm = vllm.LLM(model=str(model), tensor_parallel_size=tensor_parallel_size,
                       gpu_memory_utilization=gpu_memory_utilization, dtype=dtype, max_model_len=max_model_len,
                       seed=seed, trust_remote_code=trust_remote_code)
        path = Path(str(model)).expanduser()
        self._setup(llm, vllm.SamplingParams, str(path.resolve()) if path.is_dir() else str(model))

    @classmethod
    def from_llm(cls, llm: Any, sampling_factory: Callable[..., Any], model_id: str) -> VLLMBackend:
        """Wrap an existing engine (or a stand-in with `generate` and `get_tokenizer`, in tests)."""
        backend = cls.__new__(cls)
        backend._setup(llm, sampling_factory, model_id)
        return backend

    def _setup(self, llm: Any, sampling_factory: Callable[..., Any], model_id: str) -> None:
        self.llm = llm
        self.tokenizer = llm.get_tokenizer()
        self._sampling_factory = sampling_factory
        self._model_id = model_id

    @property
    def model_id(self) -> str:
        return self._model_id

    def prompt_ids(self, request: GenerationRequest) -> list[int]:
        """The hf backend's rendering (it only needs `self.tokenizer`), so both backends feed the same tokens."""
        from selfcorrect.backends.hf import HFBackend

        return HFBackend.prompt_ids(self, request)  # type: ignore[arg-type]

    def generate(self, requests: Sequence[GenerationRequest]) -> list[Generation]:
        if any(r.hidden_layers for r in requests):
            raise SelfCorrectError("vllm backend: hidden states are not available from vLLM; use the hf backend "
                                   "for hidden-state probes")
        if not requests:
            return []
        prompts = [{"prompt_token_ids": self.prompt_ids(r)} for r in requests]
        params = [vllm_sampling_params(r.params, self._sampling_factory) for r in requests]
        return parse_outputs(self.llm.generate(prompts, params, use_tqdm=False), requests)

    def close(self) -> None:
        """Drop the engine so its GPU memory can be freed (vLLM releases it when the engine is collected)."""
        self.llm = None
