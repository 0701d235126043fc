"""Which tokens of a rendered conversation each assistant turn says: its content and its end-of-turn token.

Loss masks need this for any model's own chat template, with no hand edits. A template that wraps assistant content
in `{% generation %}` ... `{% endgeneration %}` says so itself (`return_assistant_tokens_mask`), and is trusted as
written: that is how a template that shows only some turns (the sandbox's two-slot window) still gets a mask. Most
hub templates (SmolLM2, Qwen2.5, Llama 3, Phi-3, Gemma) have no such markers, so for them the turns are recovered
by rendering the conversation prefix by prefix:

- the conversation before assistant message i, with the generation prompt, must render as a prefix of the whole
  conversation, and tokenize to the same first tokens (the token-level prefix property), so the turn's tokens
  start where that prefix ends;
- the turn runs to where the conversation through message i stops agreeing with the whole one (Phi-3 ends a
  conversation with an extra end-of-text token, which the whole conversation does not have there);
- inside it, the content is found verbatim, or trimmed (Llama 3 and Gemma trim it), and must start on a token
  boundary; what the model says is the content through the first special token after it, the end-of-turn token
  (`<|im_end|>`, `<|eot_id|>`, `<|end|>`, `<end_of_turn>`), never the newline a template writes after it.

A template that breaks any of this (it rewrites earlier turns once later ones follow, drops or rewrites content,
or ends a turn without a special token) gets one error naming the model, never a silently wrong mask.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from selfcorrect.errors import SelfCorrectError

_GENERATION_TAG = re.compile(r"\{%-?\s*generation\s*-?%\}")


def tokenizer_name(tokenizer: Any) -> str:
    return getattr(tokenizer, "name_or_path", "") or type(tokenizer).__name__


def chat_template(tokenizer: Any) -> str:
    """The tokenizer's chat template, or a one-line error naming the model."""
    try:
        return tokenizer.get_chat_template()
    except ValueError:
        raise SelfCorrectError(f"tokenizer {tokenizer_name(tokenizer)!r} has no chat template; add a "
                               "`chat_template` (in tokenizer_config.json or chat_template.jinja)") from None


def _render(tokenizer: Any, messages: Sequence[dict[str, Any]], add_generation_prompt: bool = False) -> str:
    from jinja2 import TemplateError

    try:
        return tokenizer.apply_chat_template(list(messages), tokenize=False,
                                             add_generation_prompt=add_generation_prompt)
    except TemplateError as exc:  # e.g. Gemma's "System role not supported"
        raise SelfCorrectError(f"the chat template of {tokenizer_name(tokenizer)!r} cannot render this "
                               f"conversation: {exc}") from None


def _encode(tokenizer: Any, text: str) -> tuple[list[int], list[tuple[int, int]]]:
    """Token ids and character offsets of rendered text, tokenized as `apply_chat_template` does."""
    try:
        encoded = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    except NotImplementedError:
        raise _slow(tokenizer) from None
    return list(encoded["input_ids"]), [tuple(o) for o in encoded["offset_mapping"]]


def _slow(tokenizer: Any) -> SelfCorrectError:
    return SelfCorrectError(f"tokenizer {tokenizer_name(tokenizer)!r} is a slow tokenizer; loss masks need a fast "
                            "one (tokenizer.json) for its offsets mapping")


def _special_ids(tokenizer: Any) -> set[int]:
    added = getattr(tokenizer, "added_tokens_decoder", {})
    return set(tokenizer.all_special_ids) | {i for i, token in added.items() if getattr(token, "special", False)}


def _agreeing(a: str, b: str) -> int:
    """Length of the common start of two strings."""
    n = min(len(a), len(b))
    return next((i for i in range(n) if a[i] != b[i]), n)


def assistant_tokens(tokenizer: Any, messages: Sequence[dict[str, Any]]
                     ) -> tuple[str, list[int], list[tuple[int, int]], list[int]]:
    """The rendered conversation, its token ids and offsets, and 1 on every token an assistant turn says."""
    if _GENERATION_TAG.search(chat_template(tokenizer)):
        return _from_markers(tokenizer, messages)
    return _from_prefixes(tokenizer, messages)


def _from_markers(tokenizer: Any, messages: Sequence[dict[str, Any]]
                  ) -> tuple[str, list[int], list[tuple[int, int]], list[int]]:
    text = _render(tokenizer, messages)
    try:
        encoded = tokenizer.apply_chat_template(list(messages), return_dict=True, return_assistant_tokens_mask=True,
                                                tokenizer_kwargs={"return_offsets_mapping": True})
    except NotImplementedError:
        raise _slow(tokenizer) from None
    return (text, list(encoded["input_ids"]), [tuple(o) for o in encoded["offset_mapping"]],
            list(encoded["assistant_masks"]))


def _from_prefixes(tokenizer: Any, messages: Sequence[dict[str, Any]]
                   ) -> tuple[str, list[int], list[tuple[int, int]], list[int]]:
    name = tokenizer_name(tokenizer)
    text = _render(tokenizer, messages)
    ids, offsets = _encode(tokenizer, text)
    special = _special_ids(tokenizer)
    mask = [0] * len(ids)

    def unrecoverable(index: int, why: str) -> SelfCorrectError:
        return SelfCorrectError(f"cannot place the loss mask of assistant message {index} with the chat template "
                                f"of {name!r}: {why}")

    for index, message in enumerate(messages):
        if message.get("role") != "assistant":
            continue
        before = _render(tokenizer, messages[:index], add_generation_prompt=True)
        if not text.startswith(before):
            raise unrecoverable(index, "the conversation before it, with the generation prompt, does not render as "
                                       "the start of the whole conversation (the template rewrites earlier turns "
                                       "once later ones follow)")
        head, _ = _encode(tokenizer, before)
        if ids[:len(head)] != head:
            raise unrecoverable(index, "the conversation before it tokenizes differently on its own than inside the "
                                       "whole conversation")
        end = _agreeing(_render(tokenizer, messages[:index + 1]), text)
        content = message.get("content", "")
        found = text.find(content, len(before), end)
        if found < 0 and content.strip():
            content = content.strip()  # Llama 3 and Gemma trim the content
            found = text.find(content, len(before), end)
        if found < 0:
            raise unrecoverable(index, "the template does not render its content verbatim")
        first = next((k for k in range(len(head), len(ids)) if offsets[k][0] >= found), len(ids))
        if first == len(ids) or offsets[first][0] != found or (first and offsets[first - 1][1] > found):
            raise unrecoverable(index, "its content does not start on a token boundary")
        stop = next((k for k in range(first, len(ids)) if offsets[k][0] >= found + len(content)
                     and offsets[k][0] < end and ids[k] in special), None)
        if stop is None:
            raise unrecoverable(index, "no special (end-of-turn) token follows its content")
        mask[first:stop + 1] = [1] * (stop + 1 - first)
    return text, ids, offsets, mask
