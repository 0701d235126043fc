"""Loss masks from real chat templates that have no `{% generation %}` markers (SmolLM2, Qwen2.5, Llama 3.2,
Phi-3.5, Gemma 2; texts and sources in tests/fixtures/chat_templates): the trained tokens must be exactly the target
message's content and its end-of-turn token, recovered by rendering the conversation prefix by prefix.

The tokenizers are the tiny byte-level BPE ones of `testing.tiny_hf`, with each template's special tokens added, so
the test runs offline in about a second per template."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from selfcorrect.errors import SelfCorrectError
from selfcorrect.training.masks import IGNORE, tokenize_conversation

FIXTURES = Path(__file__).parent / "fixtures" / "chat_templates"
# template file -> (tiny_hf family to start from, bos, eos, further special tokens, end-of-turn token)
TEMPLATES = {
    "smollm2-135m-instruct": ("qwen2", None, "<|im_end|>", (), "<|im_end|>"),
    "qwen2.5-0.5b-instruct": ("qwen2", None, "<|im_end|>", (), "<|im_end|>"),
    "llama-3.2-3b-instruct": ("llama", "<|begin_of_text|>", "<|eot_id|>", (), "<|eot_id|>"),
    "phi-3.5-mini-instruct": ("phi3", "<s>", "<|endoftext|>", (), "<|end|>"),
    "gemma-2-2b-it": ("llama", "<bos>", "<eos>", ("<start_of_turn>", "<end_of_turn>"), "<end_of_turn>"),
}
TRIMS = {"llama-3.2-3b-instruct", "gemma-2-2b-it"}
QUESTION, ANSWER, CORRECTION = "What is 2 + 3?", "The answer is 6.", "Let me check again. The answer is 5."
SEGMENTS = [("The answer is 6.", "neg"), (" Wait, let me check.", "none"), (" The answer is 5.", "pos")]


def _tokenizer(family: str, bos: str | None, eos: str, extra: tuple[str, ...], template: str):
    from selfcorrect.testing.tiny_hf import build_tokenizer

    tokenizer = build_tokenizer(family)
    tokenizer.add_special_tokens({"eos_token": eos, **({"bos_token": bos} if bos else {}),
                                  "additional_special_tokens": list(extra)})
    tokenizer.chat_template = template
    tokenizer.name_or_path = f"tiny-{family}"
    return tokenizer


@pytest.fixture(scope="module")
def tokenizers():
    return {name: _tokenizer(*spec[:4], (FIXTURES / f"{name}.jinja").read_text())
            for name, spec in TEMPLATES.items()}


def _conversation(answer: str = ANSWER, correction: str = CORRECTION) -> list[dict]:
    return [{"role": "user", "content": QUESTION}, {"role": "assistant", "content": answer},
            {"role": "user", "content": "Review your answer."}, {"role": "assistant", "content": correction}]


def _runs(record: dict, key: str = "labels") -> list[list[int]]:
    """Maximal runs of positions that carry loss (`labels`) or unlikelihood (`neg_mask`)."""
    flags = [label != IGNORE for label in record["labels"]] if key == "labels" else list(map(bool, record[key]))
    runs: list[list[int]] = []
    for i, flag in enumerate(flags):
        if flag and runs and runs[-1][-1] == i - 1:
            runs[-1].append(i)
        elif flag:
            runs.append([i])
    return runs


def _decode(tokenizer, record, positions) -> str:
    return tokenizer.decode([record["input_ids"][i] for i in positions])


@pytest.mark.parametrize("name", TEMPLATES)
def test_last_assistant_trains_exactly_the_correction_and_its_end_of_turn_token(tokenizers, name):
    tokenizer, eot = tokenizers[name], TEMPLATES[name][4]
    conversation = _conversation()
    record = tokenize_conversation(tokenizer, conversation, "last_assistant")

    assert record["input_ids"] == tokenizer.apply_chat_template(conversation)["input_ids"]
    [span] = _runs(record)
    assert _decode(tokenizer, record, span) == CORRECTION + eot
    assert all(record["labels"][i] == record["input_ids"][i] for i in span)
    # nothing of the header: the token before the span closes the assistant header, and the answer comes earlier
    before = tokenizer.decode(record["input_ids"][:span[0]])
    assert before.endswith("\n") and ANSWER in before and CORRECTION not in before


@pytest.mark.parametrize("name", TEMPLATES)
def test_all_assistant_trains_each_turn_with_its_end_of_turn_token(tokenizers, name):
    tokenizer, eot = tokenizers[name], TEMPLATES[name][4]
    record = tokenize_conversation(tokenizer, _conversation(), "all_assistant")
    assert [_decode(tokenizer, record, run) for run in _runs(record)] == [ANSWER + eot, CORRECTION + eot]


@pytest.mark.parametrize("name", TEMPLATES)
def test_spans_map_segments_to_their_tokens(tokenizers, name):
    tokenizer, eot = tokenizers[name], TEMPLATES[name][4]
    content = [{"text": text, "train": kind} for text, kind in SEGMENTS]
    record = tokenize_conversation(tokenizer, [{"role": "user", "content": QUESTION},
                                               {"role": "assistant", "content": content}], "spans")
    text_of = {kind: text for text, kind in SEGMENTS}
    assert [_decode(tokenizer, record, run) for run in _runs(record)] == [text_of["pos"] + eot]
    assert [_decode(tokenizer, record, run) for run in _runs(record, "neg_mask")] == [text_of["neg"]]


@pytest.mark.parametrize("name", TEMPLATES)
def test_the_same_text_earlier_in_the_conversation_is_never_trained(tokenizers, name):
    """The correction repeats the answer, which the review request also quotes: only the last turn is trained."""
    tokenizer, eot = tokenizers[name], TEMPLATES[name][4]
    conversation = _conversation(ANSWER, ANSWER)
    conversation[2]["content"] = ANSWER
    record = tokenize_conversation(tokenizer, conversation, "last_assistant")
    [span] = _runs(record)
    assert _decode(tokenizer, record, span) == ANSWER + eot
    assert tokenizer.decode(record["input_ids"][:span[0]]).count(ANSWER) == 2


@pytest.mark.parametrize("name", TEMPLATES)
def test_content_with_surrounding_whitespace_is_trained_as_rendered(tokenizers, name):
    """Llama 3 and Gemma trim message content; the mask follows what the template renders."""
    tokenizer, eot = tokenizers[name], TEMPLATES[name][4]
    padded = "  " + CORRECTION + "\n"
    record = tokenize_conversation(tokenizer, _conversation(correction=padded), "last_assistant")
    [span] = _runs(record)
    shown = CORRECTION if name in TRIMS else padded
    assert _decode(tokenizer, record, span) == shown + eot


@pytest.mark.parametrize("arch", ["gpt2", "llama", "qwen2", "phi3"])
@pytest.mark.parametrize("loss_on", ["last_assistant", "all_assistant", "spans"])
def test_prefixes_give_the_same_masks_as_generation_markers(arch, loss_on):
    """The tiny models' templates mark assistant turns with `{% generation %}`; the same templates without the
    markers must give identical records through the prefix-by-prefix path."""
    from selfcorrect.testing.tiny_hf import build_tokenizer

    tag = re.compile(r"\{%-?\s*(end)?generation\s*-?%\}")
    marked = build_tokenizer(arch)
    unmarked = build_tokenizer(arch)
    unmarked.chat_template = tag.sub("", marked.chat_template)
    assert tag.search(marked.chat_template) and not tag.search(unmarked.chat_template)
    conversation = _conversation()
    if loss_on == "spans":
        conversation[3]["content"] = [{"text": text, "train": kind} for text, kind in SEGMENTS]
    expected = tokenize_conversation(marked, conversation, loss_on)
    assert tokenize_conversation(unmarked, conversation, loss_on) == expected


def _plain(template: str):
    from selfcorrect.testing.tiny_hf import build_tokenizer

    tokenizer = build_tokenizer("qwen2")
    tokenizer.chat_template = template
    tokenizer.name_or_path = "some-org/some-model"
    return tokenizer


@pytest.mark.parametrize(("template", "why"), [
    # shows only the last assistant turn, so earlier prefixes are not prefixes of the whole
    ("{% for m in messages %}{% if m['role'] == 'user' or loop.last %}{{ '<|im_start|>' + m['role'] + '\\n' + "
     "m['content'] + '<|im_end|>\\n' }}{% endif %}{% endfor %}"
     "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}", "rewrites earlier turns"),
    ("{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\\n' + m['content'] | upper + '<|im_end|>\\n' }}"
     "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}", "verbatim"),
    ("{% for m in messages %}{{ m['role'] + ': ' + m['content'] + '\\n\\n' }}{% endfor %}"
     "{% if add_generation_prompt %}{{ 'assistant: ' }}{% endif %}", "no special"),
])
def test_a_template_whose_turns_cannot_be_recovered_is_one_error_naming_the_model(template, why):
    with pytest.raises(SelfCorrectError, match=rf"'some-org/some-model'.*{why}"):
        tokenize_conversation(_plain(template), _conversation(), "last_assistant")


def test_a_conversation_the_template_rejects_is_one_error(tokenizers):
    conversation = [{"role": "system", "content": "Be brief."}, *_conversation()]
    with pytest.raises(SelfCorrectError, match="cannot render this conversation: System role not supported"):
        tokenize_conversation(tokenizers["gemma-2-2b-it"], conversation)
