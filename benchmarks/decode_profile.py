"""Where one decode step of the `hf` backend spends its time on SmolLM2, and what the CPU allows.

    python benchmarks/decode_profile.py [--batch 64] [--context 200] [--out benchmarks/results/decode-profile.json]

`batch` rows of GSM8K test questions through the chat template are prefilled, padded to `context` tokens of KV
cache with random tokens, then a few decode steps run under torch.profiler. The step's CPU time is split into the
decoder's linear layers, the output head (the vocabulary-wide projection), attention, and everything else
(norms, rotary embeddings, activations, masks, cache writes). Beside it, what the machine does on its own: memory
bandwidth (a 256 MB copy) and matrix-multiply throughput at the step's shapes. This says which target is bound by
what, so the next speed-up is chosen on numbers. Run it alone: two torch jobs on 2 cores thrash.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

STEPS = 6


def _timed(fn: Any, reps: int) -> float:
    fn()
    start = time.perf_counter()
    for _ in range(reps):
        fn()
    return (time.perf_counter() - start) / reps


def machine(batch: int, hidden: int, inner: int, vocab: int) -> dict[str, Any]:
    """Copy bandwidth and the GFLOP/s of each linear shape a decode step multiplies, at this batch."""
    import torch

    source = torch.randn(64 * 1024 * 1024)
    target = torch.empty_like(source)
    seconds = _timed(lambda: target.copy_(source), 5)
    shapes = {"attention projection": (hidden, hidden), "MLP up": (hidden, inner), "MLP down": (inner, hidden),
              "output head": (hidden, vocab)}
    gflops = {}
    for name, (k, n) in shapes.items():
        x, w = torch.randn(batch, k), torch.randn(n, k)
        gflops[name] = round(2 * batch * k * n / _timed(lambda x=x, w=w: torch.nn.functional.linear(x, w), 5) / 1e9, 1)
    return {"copy_gb_per_s": round(2 * source.numel() * 4 / seconds / 1e9, 1), "linear_gflop_per_s": gflops}


def profile(batch: int, context: int) -> dict[str, Any]:
    import torch
    from torch.profiler import ProfilerActivity, profile

    from selfcorrect.backends.decode import preallocated_cache
    from selfcorrect.backends.hf import HFBackend
    from selfcorrect.tasks import get_task

    backend = HFBackend("smollm2-135m-instruct")
    model, config = backend.model, backend.model.config
    questions = [ex.fields["question"] for ex in get_task("gsm8k").examples("test", limit=batch)]
    prompts = [backend.tokenizer.apply_chat_template([{"role": "user", "content": q}], add_generation_prompt=True,
                                                     tokenize=False) for q in questions]
    ids = backend.tokenizer(prompts, add_special_tokens=False)["input_ids"]
    generator = torch.Generator().manual_seed(0)
    rows = torch.stack([torch.tensor((p + torch.randint(100, 40000, (context,), generator=generator).tolist())
                                     [:context]) for p in ids])
    mask = torch.ones(batch, context + 2 * STEPS + 2, dtype=torch.long)
    cache = preallocated_cache(model, mask.shape[1])
    with torch.inference_mode():
        out = model(input_ids=rows, attention_mask=mask[:, :context], past_key_values=cache, use_cache=True,
                    logits_to_keep=1)
        token = out.logits[:, -1].argmax(-1)

        def step(position: int) -> Any:
            out = model(input_ids=token[:, None], attention_mask=mask[:, :position + 1],
                        position_ids=torch.full((batch, 1), position), past_key_values=cache, use_cache=True)
            return out.logits[:, -1].argmax(-1)

        token = step(context)  # warm-up
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            for position in range(context + 1, context + 1 + STEPS):
                token = step(position)
    events = prof.key_averages()
    total = sum(e.self_cpu_time_total for e in events) / STEPS / 1e3
    attention = sum(e.self_cpu_time_total for e in events if "attention" in e.key) / STEPS / 1e3
    matmul = sum(e.self_cpu_time_total for e in events if e.key in ("aten::mm", "aten::addmm")) / STEPS / 1e3
    head_x = torch.randn(batch, config.hidden_size)
    head = _timed(lambda: model.lm_head(head_x), 5) * 1e3
    return {"batch": batch, "context": context, "step_ms": round(total, 1),
            "split_ms": {"decoder linears": round(matmul - head, 1), "output head": round(head, 1),
                         "attention": round(attention, 1), "other": round(total - matmul - attention, 1)},
            "useful_tok_per_s_bound": round(batch / total * 1e3, 1),
            "machine": machine(batch, config.hidden_size, config.intermediate_size, config.vocab_size),
            "torch_threads": torch.get_num_threads(), "dtype": backend.dtype}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--context", type=int, default=200)
    parser.add_argument("--out", default="benchmarks/results/decode-profile.json")
    args = parser.parse_args()
    result = profile(args.batch, args.context)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
