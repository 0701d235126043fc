"""Loss masks from the chat template: which tokens of a rendered conversation the model is trained to say.

The reference STaSC code found the last assistant turn by hard-coded token ids (Qwen's 151644, Phi-3's 32001), so
any other model silently trained on the wrong tokens. Here the tokenizer's own chat template decides: assistant
content must sit inside `{% generation %}` ... `{% endgeneration %}`, and `apply_chat_template(...,
return_assistant_tokens_mask=True)` marks those tokens. Within that mask we then locate each assistant message by
its text in the rendered conversation and map characters to tokens through the offsets mapping, so the same code
serves a character-level sandbox tokenizer and byte-level BPE tokenizers alike.

Three modes:
- `last_assistant` (STaSC): loss only on the final assistant turn, the correction, plus the end-of-turn token the
  template puts inside the generation block; earlier assistant turns are context.
- `all_assistant`: every token inside a generation block.
- `spans` (InSeC): an assistant message's content may be a list of segments `{"text", "train"}` with `train` one of
  `pos` (learn it), `none` (context) or `neg` (a mistake: no likelihood, flagged in `neg_mask` for unlikelihood).
  The end-of-turn tokens after such a message are learnt only when its last segment is `pos`, because the model
  should learn to stop after a correction, not after a mistake. Plain-string assistant messages are context.

Labels are never trained on `neg` tokens (they are -100 there): every consumer of `labels` (TRL's loss, its token
counts) then does the right thing, and the unlikelihood term reads its targets from `input_ids` at `neg_mask`.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from selfcorrect.errors import SelfCorrectError

LossOn = Literal["last_assistant", "all_assistant", "spans"]
LOSS_MODES: tuple[str, ...] = ("last_assistant", "all_assistant", "spans")
SEGMENT_KINDS = ("pos", "none", "neg")
IGNORE = -100
_GENERATION_TAG = re.compile(r"\{%-?\s*generation\s*-?%\}")


@dataclass(frozen=True)
class _Message:
    """An assistant message as rendered: its content string and its segments as character ranges of that string."""

    index: int
    content: str
    segments: tuple[tuple[int, int, str], ...]  # (start, end, kind), relative to content


def _tokenizer_name(tokenizer: Any) -> str:
    return getattr(tokenizer, "name_or_path", "") or type(tokenizer).__name__


def require_generation_template(tokenizer: Any) -> str:
    """The tokenizer's chat template, or a one-line error saying what to add to which tokenizer."""
    name = _tokenizer_name(tokenizer)
    try:
        template = tokenizer.get_chat_template()
    except ValueError:
        raise SelfCorrectError(f"tokenizer {name!r} has no chat template; add a `chat_template` (in "
                               "tokenizer_config.json or chat_template.jinja) that wraps assistant content in "
                               "{% generation %}...{% endgeneration %}") from None
    if not _GENERATION_TAG.search(template):
        raise SelfCorrectError(f"the chat template of tokenizer {name!r} has no {{% generation %}} markers; wrap each "
                               "assistant message's content and end-of-turn token in {% generation %}..."
                               "{% endgeneration %} so loss masks come from the template")
    return template


def _normalise(messages: Sequence[dict[str, Any]], loss_on: str) -> tuple[list[dict[str, Any]], list[_Message]]:
    """Messages with segment lists joined into strings, and every assistant message with its segment ranges."""
    rendered, assistants = [], []
    for index, message in enumerate(messages):
        content = message.get("content", "")
        segments: list[tuple[int, int, str]] = []
        if isinstance(content, list):
            if loss_on != "spans":
                raise SelfCorrectError(f"message {index} has a list of segments as content; segments need "
                                       "loss_on='spans'")
            if message.get("role") != "assistant":
                raise SelfCorrectError(f"message {index}: only assistant messages can be given as segments")
            text = ""
            for segment in content:
                kind = segment.get("train") if isinstance(segment, dict) else None
                if kind not in SEGMENT_KINDS or not isinstance(segment.get("text"), str):
                    raise SelfCorrectError(f"message {index}: a segment must be {{'text': str, 'train': "
                                           f"'pos'|'none'|'neg'}}, got {segment!r}")
                segments.append((len(text), len(text) + len(segment["text"]), kind))
                text += segment["text"]
            content = text
        rendered.append({**message, "content": content})
        if message.get("role") == "assistant":
            assistants.append(_Message(index, content, tuple(segments)))
    if not assistants:
        raise SelfCorrectError("a training conversation needs at least one assistant message")
    return rendered, assistants


def _runs(mask: Sequence[int]) -> list[tuple[int, int]]:
    """Maximal [start, end) token runs where `mask` is 1: the template's generation blocks."""
    runs, start = [], None
    for i, flag in enumerate([*mask, 0]):
        if flag and start is None:
            start = i
        elif not flag and start is not None:
            runs.append((start, i))
            start = None
    return runs


def _locate(text: str, block_chars: list[tuple[int, int]], assistants: list[_Message], needed: int,
            name: str) -> dict[int, tuple[int, int]]:
    """Character range (content start, end of its generation block) of the last `needed` assistant messages.

    Messages are matched from the end, because templates that hide old turns (the sandbox shows two) drop them from
    the front. Each content is searched only inside generation blocks and before the previous match, so the same
    text in a user turn is never mistaken for it. The block's tail after the content (the end-of-turn token)
    belongs to the message, up to where the next message's content begins.
    """
    found: dict[int, tuple[int, int]] = {}
    cursor = len(text)
    for message in reversed(assistants[-needed:]):
        start, block_end = -1, 0
        for block_start, block_end in reversed(block_chars):
            if message.content and block_start < cursor:
                start = text.rfind(message.content, block_start, min(block_end, cursor))
                if start >= 0:
                    break
        if start < 0:
            raise SelfCorrectError(f"the chat template of tokenizer {name!r} does not render assistant message "
                                   f"{message.index} verbatim inside a {{% generation %}} block (empty content, or "
                                   "a template that rewrites or drops it), so its loss mask cannot be placed")
        found[message.index] = (start, min(block_end, cursor))
        cursor = start
    return found


def tokenize_conversation(tokenizer: Any, messages: Sequence[dict[str, Any]],
                          loss_on: str = "last_assistant") -> dict[str, list[int]]:
    """Render `messages` with the chat template and return `input_ids`, `labels` (-100 off the mask) and
    `neg_mask` (1 on `neg` segment tokens, all zeros outside `spans` mode, so datasets mixing modes share columns)."""
    if loss_on not in LOSS_MODES:
        from selfcorrect.errors import suggest

        raise SelfCorrectError(f"unknown loss_on {loss_on!r}{suggest(loss_on, LOSS_MODES)}; "
                               f"choose one of {', '.join(LOSS_MODES)}")
    name = _tokenizer_name(tokenizer)
    require_generation_template(tokenizer)
    rendered, assistants = _normalise(messages, loss_on)
    text = tokenizer.apply_chat_template(rendered, tokenize=False)
    try:
        encoded = tokenizer.apply_chat_template(rendered, return_dict=True, return_assistant_tokens_mask=True,
                                                tokenizer_kwargs={"return_offsets_mapping": True})
    except NotImplementedError:
        raise SelfCorrectError(f"tokenizer {name!r} is a slow tokenizer; loss masks need a fast one "
                               "(tokenizer.json) for its offsets mapping") from None
    ids, offsets = list(encoded["input_ids"]), [tuple(o) for o in encoded["offset_mapping"]]
    generation = list(encoded["assistant_masks"])
    if not any(generation):
        raise SelfCorrectError(f"the chat template of tokenizer {name!r} rendered no assistant tokens inside "
                               "{% generation %} for this conversation")
    labels, neg_mask = [IGNORE] * len(ids), [0] * len(ids)
    if loss_on == "all_assistant":
        labels = [tok if flag else IGNORE for tok, flag in zip(ids, generation, strict=True)]
        return {"input_ids": ids, "labels": labels, "neg_mask": neg_mask}

    block_chars = [(offsets[s][0], offsets[e - 1][1]) for s, e in _runs(generation)]
    if loss_on == "last_assistant":
        needed = 1
        kinds_of = {assistants[-1].index: ((0, len(assistants[-1].content), "pos"),)}
    else:
        trained = [i for i, m in enumerate(assistants) if m.segments]
        if not trained:
            raise SelfCorrectError("loss_on='spans' needs at least one assistant message given as segments")
        needed = len(assistants) - trained[0]
        kinds_of = {m.index: m.segments for m in assistants if m.segments}
    located = _locate(text, block_chars, assistants, needed, name)

    for index, segments in kinds_of.items():
        start, block_end = located[index]
        content_end = start + segments[-1][1]
        ranges = [(start + s, start + e, kind) for s, e, kind in segments]
        ranges.append((content_end, block_end, segments[-1][2] if segments[-1][2] == "pos" else "none"))
        for i, (char, _) in enumerate(offsets):
            if not generation[i]:
                continue
            kind = next((k for s, e, k in ranges if s <= char < e), None)
            if kind == "pos":
                labels[i] = ids[i]
            elif kind == "neg":
                neg_mask[i] = 1
    return {"input_ids": ids, "labels": labels, "neg_mask": neg_mask}
