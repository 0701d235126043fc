"""Loss masks come from the chat template: for every tokenizer we ship (the character-level sandbox one and tiny
GPT-2, Llama, Qwen2 and Phi-3 BPE ones), the trained tokens must decode to exactly the text meant to be learnt."""

from __future__ import annotations

import os

import pytest

from selfcorrect.errors import SelfCorrectError
from selfcorrect.training.masks import IGNORE, tokenize_conversation

os.environ.setdefault("HF_HUB_OFFLINE", "1")

NAMES = ("sandbox", "gpt2", "llama", "qwen2", "phi3")
EOS = {"sandbox": "<eos>", "gpt2": "<|endoftext|>", "llama": "<|eot_id|>", "qwen2": "<|im_end|>", "phi3": "<|end|>"}
# Per tokenizer: (question, first answer, correction, [segments]). Sandbox text is digits only. Segment boundaries
# sit at word starts so that BPE tokens never straddle them and decoding the masked tokens gives the segment back.
TEXTS = {
    "sandbox": ("1234", "56785678", "12341234", [("5678", "neg"), ("56", "none"), ("781234", "pos")]),
    "bpe": ("What is 2 + 3?", "The answer is 6.", "The answer is 5.",
            [("The answer is 6.", "neg"), (" Wait, let me check.", "none"), (" The answer is 5.", "pos")]),
}


@pytest.fixture(scope="module")
def tokenizers(tmp_path_factory):
    from transformers import AutoTokenizer

    from selfcorrect.sandbox.tokenizer import build_tokenizer
    from selfcorrect.testing.tiny_hf import tiny_model_dir

    root = tmp_path_factory.mktemp("tiny-models")
    loaded = {arch: AutoTokenizer.from_pretrained(tiny_model_dir(arch, root)) for arch in NAMES[1:]}
    return {"sandbox": build_tokenizer(), **loaded}


def _texts(name: str) -> tuple[str, str, str, list[tuple[str, str]]]:
    return TEXTS["sandbox" if name == "sandbox" else "bpe"]


def _conversation(question: str, answer: str, correction: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": question}, {"role": "assistant", "content": answer},
            {"role": "user", "content": "Review your answer."}, {"role": "assistant", "content": correction}]


def _trained(record: dict[str, list[int]], key: str = "labels") -> list[int]:
    """Positions that carry loss (`labels`) or unlikelihood (`neg_mask`)."""
    if key == "labels":
        return [i for i, label in enumerate(record["labels"]) if label != IGNORE]
    return [i for i, flag in enumerate(record["neg_mask"]) if flag]


def _decode(tokenizer, record, positions) -> str:
    return tokenizer.decode([record["input_ids"][i] for i in positions])


@pytest.mark.slow
@pytest.mark.parametrize("name", NAMES)
def test_last_assistant_trains_the_correction_and_its_stop_token_only(tokenizers, name):
    tokenizer = tokenizers[name]
    question, answer, correction, _ = _texts(name)
    record = tokenize_conversation(tokenizer, _conversation(question, answer, correction), "last_assistant")
    everything = tokenize_conversation(tokenizer, _conversation(question, answer, correction), "all_assistant")

    last = _trained(record)
    first = sorted(set(_trained(everything)) - set(last))
    assert _decode(tokenizer, record, last) == correction + EOS[name]
    assert last == list(range(last[0], last[-1] + 1))  # one contiguous span
    assert _decode(tokenizer, everything, first) == answer + EOS[name]
    assert max(first) < min(last)
    assert all(record["labels"][i] == record["input_ids"][i] for i in last)
    assert not any(record["neg_mask"])


@pytest.mark.slow
@pytest.mark.parametrize("name", NAMES)
def test_last_assistant_finds_the_last_turn_when_the_same_text_appears_earlier(tokenizers, name):
    """The correction repeats the first answer, which the review request also quotes: only the last turn's own
    occurrence may be trained."""
    tokenizer = tokenizers[name]
    question, answer, _, _ = _texts(name)
    conversation = _conversation(question, answer, answer)
    conversation[2]["content"] = answer
    record = tokenize_conversation(tokenizer, conversation, "last_assistant")
    everything = tokenize_conversation(tokenizer, conversation, "all_assistant")
    last = _trained(record)
    first = sorted(set(_trained(everything)) - set(last))
    assert _decode(tokenizer, record, last) == answer + EOS[name]
    assert _decode(tokenizer, everything, first) == answer + EOS[name]
    assert max(first) < min(last)


@pytest.mark.slow
@pytest.mark.parametrize("name", NAMES)
def test_spans_map_pos_neg_and_none_segments_to_their_tokens(tokenizers, name):
    tokenizer = tokenizers[name]
    question, _, _, segments = _texts(name)
    content = [{"text": text, "train": kind} for text, kind in segments]
    record = tokenize_conversation(tokenizer, [{"role": "user", "content": question},
                                               {"role": "assistant", "content": content}], "spans")
    text_of = {kind: text for text, kind in segments}

    assert _decode(tokenizer, record, _trained(record)) == text_of["pos"] + EOS[name]
    negatives = _trained(record, "neg_mask")
    assert _decode(tokenizer, record, negatives) == text_of["neg"]
    assert all(record["labels"][i] == IGNORE for i in negatives)  # a mistake is never learnt
    untouched = [i for i in range(len(record["input_ids"]))
                 if record["labels"][i] == IGNORE and not record["neg_mask"][i]]
    assert text_of["none"] in _decode(tokenizer, record, untouched)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["sandbox", "llama"])
def test_spans_ending_in_a_mistake_do_not_train_the_stop_token(tokenizers, name):
    tokenizer = tokenizers[name]
    question, answer, correction, _ = _texts(name)
    content = [{"text": correction, "train": "pos"}, {"text": answer, "train": "neg"}]
    record = tokenize_conversation(tokenizer, [{"role": "user", "content": question},
                                               {"role": "assistant", "content": content}], "spans")
    assert _decode(tokenizer, record, _trained(record)) == correction
    assert _decode(tokenizer, record, _trained(record, "neg_mask")) == answer


@pytest.mark.slow
@pytest.mark.parametrize("name", NAMES)
def test_all_assistant_is_the_templates_generation_mask(tokenizers, name):
    tokenizer = tokenizers[name]
    conversation = _conversation(*_texts(name)[:3])
    record = tokenize_conversation(tokenizer, conversation, "all_assistant")
    reference = tokenizer.apply_chat_template(conversation, return_dict=True, return_assistant_tokens_mask=True)
    assert record["input_ids"] == reference["input_ids"]
    assert [int(label != IGNORE) for label in record["labels"]] == reference["assistant_masks"]


def test_sandbox_template_hiding_old_answers_still_masks_the_last_one():
    """The sandbox window shows only the last two answers; the last one must still be found."""
    from selfcorrect.sandbox.tokenizer import build_tokenizer

    tokenizer = build_tokenizer()
    conversation = [{"role": "user", "content": "12"}, {"role": "assistant", "content": "3333"},
                    {"role": "user", "content": "again"}, {"role": "assistant", "content": "4444"},
                    {"role": "user", "content": "again"}, {"role": "assistant", "content": "5555"}]
    record = tokenize_conversation(tokenizer, conversation)
    assert tokenizer.decode(record["input_ids"]) == "<bos>Q12A4444<eos>C5555<eos>"
    assert _decode(tokenizer, record, _trained(record)) == "5555<eos>"


def test_tokenizer_without_template_is_a_clear_error_and_one_without_markers_is_masked_by_prefixes():
    from selfcorrect.sandbox.tokenizer import build_tokenizer

    conversation = _conversation("1", "2", "3")
    tokenizer = build_tokenizer()
    tokenizer.chat_template = None
    with pytest.raises(SelfCorrectError, match=r"no chat template"):
        tokenize_conversation(tokenizer, conversation)
    tokenizer.chat_template = "{% for m in messages %}{{ m['content'] }}{{ eos_token }}{% endfor %}"
    record = tokenize_conversation(tokenizer, conversation)
    assert _decode(tokenizer, record, _trained(record)) == "3<eos>"


@pytest.mark.parametrize(("messages", "loss_on", "message"), [
    ([{"role": "user", "content": "1"}], "last_assistant", "at least one assistant message"),
    ([{"role": "user", "content": "1"}, {"role": "assistant", "content": [{"text": "2", "train": "pos"}]}],
     "last_assistant", "segments need loss_on='spans'"),
    ([{"role": "user", "content": "1"}, {"role": "assistant", "content": [{"text": "2", "train": "maybe"}]}],
     "spans", "a segment must be"),
    ([{"role": "user", "content": "1"}, {"role": "assistant", "content": "2"}], "spans", "given as segments"),
    ([{"role": "user", "content": "1"}, {"role": "assistant", "content": "2"}], "last_asistant", "did you mean"),
    ([{"role": "user", "content": "1"}, {"role": "assistant", "content": ""}], "last_assistant", "verbatim"),
])
def test_malformed_requests_are_one_line_errors(messages, loss_on, message):
    from selfcorrect.sandbox.tokenizer import build_tokenizer

    with pytest.raises(SelfCorrectError, match=message):
        tokenize_conversation(build_tokenizer(), messages, loss_on)
