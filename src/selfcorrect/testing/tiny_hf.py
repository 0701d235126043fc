"""Tiny randomly initialised models of real architectures (GPT-2, Llama, Qwen2, Phi-3), built offline in seconds.

Tests and benchmarks need a model folder that behaves like a real checkpoint of each family: the family's own
config class, its special tokens, a chat template in its style and a byte-level BPE tokenizer, all loadable with
`AutoModelForCausalLM` / `AutoTokenizer`. Nothing can be downloaded here, so the tokenizer is trained on a small
synthetic corpus generated in code, and the weights are random (seeded).

Each family pre-tokenizes the way the real one does. That is not decoration: for `qwen2` folders `AutoTokenizer`
ignores the saved tokenizer class and rebuilds `Qwen2Tokenizer` from the vocabulary with Qwen's own
pre-tokenizer, so a tokenizer trained with any other pre-tokenizer would come back with different ids.
Training with Qwen's pre-tokenizer makes the rebuild a no-op; `tests/test_tiny_hf.py` checks the round trip.

Every chat template wraps assistant content plus its end-of-turn token in `{% generation %}`, so TRL's
assistant-only loss (and `return_assistant_tokens_mask`) marks what the model must learn to say, stop included.
"""

from __future__ import annotations

import os
import random
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ARCHS = ("gpt2", "llama", "qwen2", "phi3")
#: Bumped whenever the output of `build_tiny_model` changes, so `tiny_model_dir` caches never serve a stale layout.
FORMAT_VERSION = 2
# Positions: enough for real few-shot prompts (STaSC's correction prompt is ~1,100 tokens under the toy BPE).
CONTEXT = 2048

_LLAMA3_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
                 r"|\s*[\r\n]+|\s+(?!\S)|\s+")
_QWEN2_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
                r"|\s*[\r\n]+|\s+(?!\S)|\s+")

_GPT2_TEMPLATE = (
    "{%- for message in messages %}"
    "{%- if message['role'] == 'assistant' %}"
    "{{- 'Assistant:\\n' }}{% generation %}{{- message['content'] + eos_token }}{% endgeneration %}{{- '\\n\\n' }}"
    "{%- else %}{{- message['role'] | capitalize + ':\\n' + message['content'] + '\\n\\n' }}{%- endif %}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- 'Assistant:\\n' }}{%- endif %}"
)
_LLAMA_TEMPLATE = (
    "{{- bos_token }}"
    "{%- for message in messages %}"
    "{{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n' }}"
    "{%- if message['role'] == 'assistant' %}"
    "{% generation %}{{- message['content'] + '<|eot_id|>' }}{% endgeneration %}"
    "{%- else %}{{- message['content'] + '<|eot_id|>' }}{%- endif %}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{%- endif %}"
)
_QWEN2_TEMPLATE = (
    "{%- for message in messages %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' }}"
    "{%- if message['role'] == 'assistant' %}"
    "{% generation %}{{- message['content'] + '<|im_end|>' }}{% endgeneration %}"
    "{%- else %}{{- message['content'] + '<|im_end|>' }}{%- endif %}"
    "{{- '\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)
_PHI3_TEMPLATE = (
    "{%- for message in messages %}"
    "{{- '<|' + message['role'] + '|>\\n' }}"
    "{%- if message['role'] == 'assistant' %}"
    "{% generation %}{{- message['content'] + '<|end|>' }}{% endgeneration %}"
    "{%- else %}{{- message['content'] + '<|end|>' }}{%- endif %}"
    "{{- '\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|assistant|>\\n' }}{%- endif %}"
)


@dataclass(frozen=True)
class Family:
    """What makes a tiny model look like its family: special tokens, pre-tokenizer, chat template, stop tokens."""

    specials: tuple[str, ...]
    eos: str
    pad: str
    bos: str | None
    stop: tuple[str, ...]  # generation_config eos ids, as real instruct checkpoints list several
    split_regex: str | None  # None: GPT-2's byte-level regex
    template: str
    add_bos: bool = False  # the tokenizer prepends BOS to raw text, as Llama's and Phi-3's do
    nfc: bool = False


FAMILIES: dict[str, Family] = {
    "gpt2": Family(specials=("<|endoftext|>", "<|pad|>"), eos="<|endoftext|>", pad="<|pad|>", bos="<|endoftext|>",
                   stop=("<|endoftext|>",), split_regex=None, template=_GPT2_TEMPLATE),
    "llama": Family(specials=("<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>",
                              "<|eot_id|>", "<|finetune_right_pad_id|>"),
                    eos="<|eot_id|>", pad="<|finetune_right_pad_id|>", bos="<|begin_of_text|>",
                    stop=("<|eot_id|>", "<|end_of_text|>"), split_regex=_LLAMA3_SPLIT, template=_LLAMA_TEMPLATE,
                    add_bos=True),
    "qwen2": Family(specials=("<|endoftext|>", "<|im_start|>", "<|im_end|>"), eos="<|im_end|>", pad="<|endoftext|>",
                    bos=None, stop=("<|im_end|>", "<|endoftext|>"), split_regex=_QWEN2_SPLIT,
                    template=_QWEN2_TEMPLATE, nfc=True),
    "phi3": Family(specials=("<s>", "<|endoftext|>", "<|system|>", "<|user|>", "<|assistant|>", "<|end|>"),
                   eos="<|end|>", pad="<|endoftext|>", bos="<s>", stop=("<|end|>", "<|endoftext|>"),
                   split_regex=None, template=_PHI3_TEMPLATE, add_bos=True),
}


def synthetic_corpus(n_lines: int = 2000, seed: int = 0) -> list[str]:
    """Short English sentences, arithmetic and question/answer lines: enough variety for a few hundred merges."""
    rng = random.Random(seed)
    names = ["Alice", "Bob", "Carol", "Dave", "Emma", "Frank", "Grace", "Henry"]
    nouns = ["apples", "books", "coins", "stones", "cards", "shells", "pens", "boxes", "birds", "trees"]
    verbs = ["has", "buys", "finds", "sells", "gives away", "counts", "loses", "keeps"]
    words = ["the", "answer", "question", "is", "correct", "wrong", "check", "step", "so", "then", "because",
             "first", "next", "total", "let", "us", "think", "again", "final", "result", "review", "your", "mistake",
             "please", "explain", "carefully", "number", "problem", "solution", "verify", "previous", "response",
             "agree", "disagree", "certain", "maybe", "probably", "calculate", "subtract", "multiply", "divide",
             "morning", "evening", "garden", "kitchen", "market", "river", "mountain", "yellow", "green", "quickly",
             "without", "through", "between", "another", "nothing", "everything", "sentence", "language", "model"]
    lines = []
    for _ in range(n_lines):
        a, b = rng.randint(0, 999), rng.randint(0, 99)
        kind = rng.randrange(4)
        if kind == 0:
            lines.append(f"{rng.choice(names)} {rng.choice(verbs)} {a} {rng.choice(nouns)}.")
        elif kind == 1:
            op, value = rng.choice([("+", a + b), ("-", a - b), ("*", a * b)])
            lines.append(f"{a} {op} {b} = {value}")
        elif kind == 2:
            lines.append(f"Question: how many {rng.choice(nouns)} does {rng.choice(names)} have?\nAnswer: {a}")
        else:
            lines.append(" ".join(rng.choice(words) for _ in range(rng.randint(4, 12))).capitalize() + ".")
    return lines


def build_tokenizer(arch: str, vocab_size: int = 512) -> Any:
    """A byte-level BPE tokenizer for `arch`, trained on `synthetic_corpus`, wrapped for transformers."""
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    family = FAMILIES[arch]
    core = Tokenizer(models.BPE())
    if family.nfc:
        core.normalizer = normalizers.NFC()
    if family.split_regex is None:
        core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    else:
        core.pre_tokenizer = pre_tokenizers.Sequence([
            pre_tokenizers.Split(Regex(family.split_regex), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    core.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=list(family.specials), show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    core.train_from_iterator(synthetic_corpus(), trainer)
    if family.add_bos:
        assert family.bos is not None
        bos_id = core.token_to_id(family.bos)
        core.post_processor = processors.TemplateProcessing(single=f"{family.bos} $A", pair=f"{family.bos} $A $B",
                                                            special_tokens=[(family.bos, bos_id)])
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=core, bos_token=family.bos, eos_token=family.eos,
                                        pad_token=family.pad, padding_side="left")
    tokenizer.chat_template = family.template
    return tokenizer


def _config(arch: str, vocab_size: int, ids: dict[str, Any]) -> Any:
    """The family's own config class at toy size: 2 layers, hidden 64, 4 heads, CONTEXT positions."""
    import transformers

    common = {"vocab_size": vocab_size, **ids}
    if arch == "gpt2":
        return transformers.GPT2Config(n_positions=CONTEXT, n_embd=64, n_layer=2, n_head=4, **common)
    sizes = {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4,
             "max_position_embeddings": CONTEXT, **common}
    if arch == "llama":
        return transformers.LlamaConfig(num_key_value_heads=2, **sizes)
    if arch == "qwen2":
        return transformers.Qwen2Config(num_key_value_heads=2, tie_word_embeddings=True, **sizes)
    return transformers.Phi3Config(num_key_value_heads=4, original_max_position_embeddings=CONTEXT, **sizes)


def tiny_model(arch: str, seed: int = 0, vocab_size: int = 512) -> tuple[Any, Any]:
    """A random `arch` model (weights from `seed`) and its tokenizer, in memory."""
    if arch not in FAMILIES:
        from selfcorrect.errors import SelfCorrectError, suggest

        raise SelfCorrectError(f"unknown tiny architecture {arch!r}{suggest(arch, ARCHS)}; known: {', '.join(ARCHS)}")
    import torch
    from transformers import AutoModelForCausalLM, GenerationConfig

    family = FAMILIES[arch]
    tokenizer = build_tokenizer(arch, vocab_size)
    ids = {"bos_token_id": tokenizer.convert_tokens_to_ids(family.bos) if family.bos else None,
           "eos_token_id": tokenizer.eos_token_id, "pad_token_id": tokenizer.pad_token_id}
    with torch.random.fork_rng(devices=[]):  # seed the init without disturbing the caller's RNG
        torch.manual_seed(seed)
        model = AutoModelForCausalLM.from_config(_config(arch, vocab_size, ids))
    model.generation_config = GenerationConfig(
        bos_token_id=ids["bos_token_id"], pad_token_id=ids["pad_token_id"],
        eos_token_id=[tokenizer.convert_tokens_to_ids(token) for token in family.stop])
    return model, tokenizer


def build_tiny_model(arch: str, out_dir: str | Path, seed: int = 0, vocab_size: int = 512) -> Path:
    """Save `tiny_model(arch, seed, vocab_size)` into `out_dir` as an ordinary model folder; returns the folder."""
    model, tokenizer = tiny_model(arch, seed, vocab_size)
    out = Path(out_dir)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def tiny_model_dir(arch: str, cache_root: str | Path) -> Path:
    """The tiny `arch` model under `cache_root`, built on first use and reused after.

    It is built in a private temporary folder and renamed into place, so concurrent test processes never see a
    half-written model; when two race, the loser discards its copy and uses the winner's.
    """
    root = Path(cache_root)
    final = root / f"tiny-{arch}-v{FORMAT_VERSION}"
    if (final / "config.json").exists():
        return final
    root.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=f".{final.name}-", dir=root))
    build_tiny_model(arch, scratch)
    try:
        os.rename(scratch, final)
    except OSError:
        shutil.rmtree(scratch, ignore_errors=True)
    return final
