"""The sandbox tokenizer: one token per character, saved as an ordinary Hugging Face tokenizer with a chat template.

The sandbox model reads a fixed two-slot context, `<bos>Q<question>A<answer><eos>C<correction><eos>`, because a
400k-parameter model with learned absolute positions only ever sees those positions. The chat template renders
any conversation into that window: the question (first user message), then the previous answer in the `A` slot
and, when the conversation ends with an assistant turn, that turn in the `C` slot. Later user messages (review
instructions) are not shown as text: the `C` marker *is* the sandbox's review instruction. Methods still send the
whole conversation, as they do to real models; the template decides what this tiny model can see.

Assistant content is wrapped in `{% generation %}` so loss masks come from the template, as for any real model.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

SPECIAL_TOKENS = ("<pad>", "<bos>", "<eos>")
MARKERS = ("Q", "A", "C")
VOCAB = (*SPECIAL_TOKENS, *"0123456789", *MARKERS)

CHAT_TEMPLATE = (
    "{{ bos_token }}Q{{ messages[0]['content'] }}"
    "{%- set answers = messages | selectattr('role', 'equalto', 'assistant') | list -%}"
    "{%- if messages[-1]['role'] == 'assistant' -%}{%- set shown = answers[-2:] -%}"
    "{%- else -%}{%- set shown = answers[-1:] -%}{%- endif -%}"
    "{%- for message in shown -%}"
    "{{ 'A' if loop.first else 'C' }}"
    "{%- generation -%}{{ message['content'] }}{{ eos_token }}{%- endgeneration -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ 'A' if shown | length == 0 else 'C' }}{%- endif -%}"
)


def build_tokenizer() -> Any:
    """A `PreTrainedTokenizerFast` over `VOCAB` with left padding (batched decoding) and the chat template."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    core = Tokenizer(models.WordLevel({tok: i for i, tok in enumerate(VOCAB)}, unk_token="<pad>"))
    core.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")
    core.decoder = decoders.Fuse()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=core, bos_token="<bos>", eos_token="<eos>",
                                        pad_token="<pad>", padding_side="left")
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def token_id(token: str) -> int:
    return VOCAB.index(token)


def save_tokenizer(out_dir: str | Path) -> Any:
    tokenizer = build_tokenizer()
    tokenizer.save_pretrained(str(out_dir))
    return tokenizer
