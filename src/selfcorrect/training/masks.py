"""Loss masks from the chat template: which tokens of a rendered conversation the model is trained to say.

The reference STaSC code found the last assistant turn by hard-coded token ids (Qwen's 151644, Phi-3's 32001), so
any other model silently trained on the wrong tokens. Here the tokenizer's own chat template decides:
`turns.assistant_tokens` marks what each assistant turn says (its content and end-of-turn token), from the
template's `{% generation %}` markers where it has them and by rendering the conversation prefix by prefix where it
has none, as most hub templates do. Within those turns we then locate each assistant message by its text in the
rendered conversation and map characters to tokens through the offsets mapping, so the same code serves a
character-level sandbox tokenizer and byte-level BPE tokenizers alike.

Three modes:
- `last_assistant` (STaSC): loss only on the final assistant turn, the correction, plus its end-of-turn token;
  earlier assistant turns are context.
- `all_assistant` (STaR, SFT, replay): every assistant turn, each with its end-of-turn token.
- `spans` (InSeC): an assistant message's content may be a list of segments `{"text", "train"}` with `train` one of
  `pos` (learn it), `none` (context) or `neg` (a mistake: no likelihood, flagged in `neg_mask` for unlikelihood).
  The end-of-turn tokens after such a message are learnt only when its last segment is `pos`, because the model
  should learn to stop after a correction, not after a mistake. Plain-string assistant messages are context.

Labels are never trained on `neg` tokens (they are -100 there): every consumer of `labels` (TRL's loss, its token
counts) then does the right thing, and the unlikelihood term reads its targets from `input_ids` at `neg_mask`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from selfcorrect.errors import SelfCorrectError
from selfcorrect.training.turns import assistant_tokens, tokenizer_name

LossOn = Literal["last_assistant", "all_assistant", "spans"]
LOSS_MODES: tuple[str, ...] = ("last_assistant", "all_assistant", "spans")
SEGMENT_KINDS = ("pos", "none", "neg")
IGNORE = -100


@dataclass(frozen=True)
class _Message:
    """An assistant message as rendered: its content string and its segments as character ranges of that string."""

    index: int
    content: str
    segments: tuple[tuple[int, int, str], ...]  # (start, end, kind), relative to content


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


def _last_in_blocks(text: str, needle: str, block_chars: list[tuple[int, int]], cursor: int) -> tuple[int, int]:
    """(start, block end) of the last occurrence of `needle` inside a block, before `cursor`; start -1 if none."""
    for block_start, block_end in reversed(block_chars):
        if needle and block_start < cursor:
            start = text.rfind(needle, block_start, min(block_end, cursor))
            if start >= 0:
                return start, block_end
    return -1, 0


def _locate(text: str, block_chars: list[tuple[int, int]], assistants: list[_Message], needed: int,
            name: str) -> dict[int, tuple[int, int, int]]:
    """Where the last `needed` assistant messages sit in `text`: (origin, content end, end of the turn's block).

    `origin` is where the content's first character would be, so a segment at `s:e` of the content sits at
    `origin + s : origin + e`; it differs from where the rendered content starts only when the template trims
    leading whitespace (Llama 3, Gemma). Messages are matched from the end, because templates that hide old turns
    (the sandbox shows two) drop them from the front. Each content is searched only inside assistant blocks and
    before the previous match, so the same text in a user turn is never mistaken for it. The block's tail after
    the content (the end-of-turn token) belongs to the message, up to where the next message's content begins.
    """
    found: dict[int, tuple[int, int, int]] = {}
    cursor = len(text)
    for message in reversed(assistants[-needed:]):
        start, block_end, shown = -1, 0, ""
        for shown in dict.fromkeys((message.content, message.content.strip())):  # verbatim, else as trimmed
            start, block_end = _last_in_blocks(text, shown, block_chars, cursor)
            if start >= 0:
                break
        if start < 0:
            raise SelfCorrectError(f"the chat template of tokenizer {name!r} does not render assistant message "
                                   f"{message.index} verbatim inside its assistant turn (empty content, or a "
                                   "template that rewrites or drops it), so its loss mask cannot be placed")
        lead = message.content.index(shown)
        found[message.index] = (start - lead, start + len(shown), min(block_end, cursor))
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
    name = tokenizer_name(tokenizer)
    rendered, assistants = _normalise(messages, loss_on)
    text, ids, offsets, said = assistant_tokens(tokenizer, rendered)
    if not any(said):
        raise SelfCorrectError(f"the chat template of tokenizer {name!r} rendered no assistant tokens for this "
                               "conversation")
    labels, neg_mask = [IGNORE] * len(ids), [0] * len(ids)
    if loss_on == "all_assistant":
        labels = [tok if flag else IGNORE for tok, flag in zip(ids, said, strict=True)]
        return {"input_ids": ids, "labels": labels, "neg_mask": neg_mask}

    block_chars = [(offsets[s][0], offsets[e - 1][1]) for s, e in _runs(said)]
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
        origin, content_end, block_end = located[index]
        ranges = [(max(origin + s, 0), min(origin + e, content_end), kind) for s, e, kind in segments]
        ranges.append((content_end, block_end, segments[-1][2] if segments[-1][2] == "pos" else "none"))
        for i, (char, _) in enumerate(offsets):
            if not said[i]:
                continue
            kind = next((k for s, e, k in ranges if s <= char < e), None)
            if kind == "pos":
                labels[i] = ids[i]
            elif kind == "neg":
                neg_mask[i] = 1
    return {"input_ids": ids, "labels": labels, "neg_mask": neg_mask}
