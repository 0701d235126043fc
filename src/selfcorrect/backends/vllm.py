"""The `vllm` backend: vLLM's offline engine (`vllm.LLM`) on one or more CUDA GPUs, for real models at scale.

Optional: `pip install 'selfcorrect[vllm]'` on a machine with a CUDA GPU; vLLM is imported only in the engine's own
process (`vllm_engine.EngineProcess`), so the rest of selfcorrect never needs it, and `close()` ends that process,
which returns all of the engine's GPU memory before the next engine or a fine-tuning step starts. The engine's
process is started with `spawn`, so a script of your own that builds this backend needs the usual
`if __name__ == "__main__":` guard (as vLLM itself asks); the `selfcorrect` command has it.

A round is ONE `LLM.generate` call with one vLLM `SamplingParams` per request (`SamplingParams.to_vllm`: `n`, the
request's own seed, logprobs of the sampled tokens), so vLLM schedules the whole round together. Prompts are passed
as token ids rendered exactly as the hf backend renders them (chat template without a second BOS), so both backends
see the same prompt tokens. vLLM's default logprobs mode is the raw model distribution, as
`Generation.token_logprobs` promises. Hidden states are not exposed by vLLM's generate API; hidden-state probes use
the hf backend.

What vLLM does and does not promise (docs/scale.md has the table):
- Each request's seed gives it its own random stream; sample k of a request with n > 1 is drawn from seed + k, so
  requests whose seeds differ by less than n share streams (run seeds are 63-bit hashes, so they do not in practice).
- The logits themselves depend on the batch (kernels pick their reductions by batch shape) unless the engine runs
  with `VLLM_BATCH_INVARIANT=1` (beta, NVIDIA compute capability >= 8.0). By default, then, a sampled request's
  output can change with what else is in its batch, and `--resume` need not reproduce an uninterrupted run.
- Greedy requests are sent with n = 1 (vLLM refuses n > 1 at temperature 0) and the answer is repeated.

Greedy outputs can also differ from the hf backend's in late digits of the logits (other kernels, bf16), which can
flip near-ties; compare backends on accuracies, not on byte-identical texts.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from selfcorrect.backends.base import Backend, Generation, GenerationRequest, repeat_greedy
from selfcorrect.backends.vllm_engine import EngineProcess, InProcessEngine
from selfcorrect.errors import SelfCorrectError

INSTALL_HINT = "pip install 'selfcorrect[vllm]' on a machine with a CUDA GPU"
#: The finish reasons recorded as they are; vLLM's others ("abort", "error", "repetition", or none) stop the round.
FINISH_REASONS = ("stop", "length")


def parse_outputs(records: Sequence[list[dict[str, Any]]], requests: Sequence[GenerationRequest]) -> list[Generation]:
    """Plain records (`vllm_engine.plain_outputs`, one list per request, in request order) -> Generations ordered by
    request, then sample. A completion that did not end with "stop" or "length" stops the round: recording an
    aborted or failed completion as an answer would score text the model never finished."""
    if len(records) != len(requests):
        raise RuntimeError(f"vLLM returned {len(records)} outputs for {len(requests)} requests")
    generations = []
    for request_index, (request, completions) in enumerate(zip(requests, records, strict=True)):
        if len(completions) != request.params.draws:
            raise RuntimeError(f"vLLM returned {len(completions)} samples for n={request.params.draws}")
        samples = []
        for sample_index, completion in enumerate(completions):
            reason = completion["finish_reason"]
            if reason not in FINISH_REASONS:
                detail = f", stop reason {completion['stop_reason']!r}" if completion["stop_reason"] else ""
                raise SelfCorrectError(f"vllm backend: request {request_index} sample {sample_index} ended with "
                                       f"finish reason {reason!r}{detail}, not 'stop' or 'length'; finished "
                                       f"chunks are kept and --resume retries the rest")
            samples.append(Generation(text=completion["text"], finish_reason=reason,
                                      token_ids=completion["token_ids"], token_logprobs=completion["token_logprobs"],
                                      request_index=request_index, sample_index=sample_index))
        generations += repeat_greedy(samples, request.params)
    return generations


class VLLMBackend(Backend):
    """A model served by vLLM in a child process. Options are `vllm.LLM`'s own; `seed` seeds the engine (each
    request still carries its own seed). `tensor_parallel_size` > 1 splits the model over that many GPUs.
    `enforce_eager` skips CUDA-graph capture: the engine starts sooner and decodes slower (short runs, tests)."""

    name = "vllm"
    supports_logprobs = True
    supports_hidden_states = False

    def __init__(self, model: str, tensor_parallel_size: int = 1, gpu_memory_utilization: float = 0.9,
                 dtype: str = "auto", max_model_len: int | None = None, seed: int = 0,
                 trust_remote_code: bool = False, enforce_eager: bool = False) -> None:
        if importlib.util.find_spec("vllm") is None:
            raise SelfCorrectError(f"the vllm backend needs vLLM, which is not installed (vllm is missing): "
                                   f"{INSTALL_HINT}")
        from transformers import AutoTokenizer

        try:
            tokenizer = AutoTokenizer.from_pretrained(str(model), trust_remote_code=trust_remote_code)
        except (OSError, ValueError) as exc:
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise SelfCorrectError(f"could not load the tokenizer of {str(model)!r}: {reason}") from None
        engine = EngineProcess({"model": str(model), "tensor_parallel_size": tensor_parallel_size,
                                "gpu_memory_utilization": gpu_memory_utilization, "dtype": dtype,
                                "max_model_len": max_model_len, "seed": seed,
                                "trust_remote_code": trust_remote_code, "enforce_eager": enforce_eager})
        path = Path(str(model)).expanduser()
        self._setup(engine, tokenizer, str(path.resolve()) if path.is_dir() else str(model))

    @classmethod
    def from_llm(cls, llm: Any, sampling_factory: Callable[..., Any], model_id: str) -> VLLMBackend:
        """Wrap an engine in this process (or a stand-in with `generate` and `get_tokenizer`, in tests)."""
        return cls.from_engine(InProcessEngine(llm, sampling_factory), llm.get_tokenizer(), model_id)

    @classmethod
    def from_engine(cls, engine: Any, tokenizer: Any, model_id: str) -> VLLMBackend:
        """Wrap an engine with `generate(prompts, param_dicts)` and `close()` (`EngineProcess`, `InProcessEngine`)."""
        backend = cls.__new__(cls)
        backend._setup(engine, tokenizer, model_id)
        return backend

    def _setup(self, engine: Any, tokenizer: Any, model_id: str) -> None:
        self.engine = engine
        self.tokenizer = tokenizer
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
        return parse_outputs(self.engine.generate(prompts, [r.params.to_vllm() for r in requests]), requests)

    def close(self) -> None:
        """End the engine (its process, with all of its GPU memory); the backend cannot generate afterwards."""
        self.engine.close()
