"""Tiny real-architecture models: they must round-trip through the Auto classes exactly, ids and logits included,
and their chat templates must mark the assistant's tokens for assistant-only loss."""

from __future__ import annotations

import os

import pytest

from selfcorrect.errors import SelfCorrectError
from selfcorrect.testing.tiny_hf import ARCHS, FAMILIES, build_tiny_model, tiny_model, tiny_model_dir

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")

TEXT = "Alice has 123 apples.\n\nQuestion: how many?  café 4567 + 89 = 4656 <|im_end|><|eot_id|>"
CONVERSATION = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "What is 2 + 3?"},
    {"role": "assistant", "content": "The answer is 5."},
    {"role": "user", "content": "Check your answer."},
    {"role": "assistant", "content": "5 is correct, final answer 5."},
]


@pytest.mark.slow
@pytest.mark.parametrize("arch", ARCHS)
def test_save_and_reload_keep_logits_and_token_ids(arch, tmp_path):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model, tokenizer = tiny_model(arch, seed=3)
    folder = build_tiny_model(arch, tmp_path / arch, seed=3)
    loaded_model = AutoModelForCausalLM.from_pretrained(folder)
    loaded_tokenizer = AutoTokenizer.from_pretrained(folder)

    ids = tokenizer(TEXT)["input_ids"]
    assert loaded_tokenizer(TEXT)["input_ids"] == ids
    assert loaded_tokenizer.decode(ids, skip_special_tokens=True) == tokenizer.decode(ids, skip_special_tokens=True)
    assert len(loaded_tokenizer) == len(tokenizer) == model.config.vocab_size == 512
    batch = torch.tensor([ids])
    with torch.inference_mode():
        delta = (model.eval()(batch).logits - loaded_model.eval()(batch).logits).abs().max().item()
    assert delta == 0.0
    assert type(loaded_model).__name__.lower().startswith(arch)


@pytest.mark.slow
@pytest.mark.parametrize("arch", ARCHS)
def test_special_tokens_and_left_padding_survive_reload(arch, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    family = FAMILIES[arch]
    folder = build_tiny_model(arch, tmp_path / arch)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder)
    assert (tokenizer.eos_token, tokenizer.pad_token, tokenizer.padding_side) == (family.eos, family.pad, "left")
    assert tokenizer.pad_token_id != tokenizer.eos_token_id
    assert model.generation_config.eos_token_id == tokenizer.convert_tokens_to_ids(list(family.stop))
    for token in family.specials:  # each special is one token, never split into bytes
        assert len(tokenizer(token, add_special_tokens=False)["input_ids"]) == 1
    bos_first = tokenizer("hello")["input_ids"][0] == tokenizer.bos_token_id
    assert bos_first == family.add_bos


@pytest.mark.slow
@pytest.mark.parametrize("arch", ARCHS)
def test_assistant_mask_covers_exactly_the_assistant_turns(arch, tmp_path):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir(arch, tmp_path))
    out = tokenizer.apply_chat_template(CONVERSATION, tokenize=True, return_dict=True,
                                        return_assistant_tokens_mask=True)
    marked = [token for token, flag in zip(out["input_ids"], out["assistant_masks"], strict=True) if flag]
    end_of_turn = tokenizer.convert_tokens_to_ids(FAMILIES[arch].eos)
    expected = []
    for message in CONVERSATION:
        if message["role"] == "assistant":
            expected += [*tokenizer(message["content"], add_special_tokens=False)["input_ids"], end_of_turn]
    assert marked == expected
    # The mask is not trivially everything: the user turns and the headers stay unmarked.
    assert 0 < len(marked) < len(out["input_ids"]) / 2


@pytest.mark.slow
@pytest.mark.parametrize("arch", ARCHS)
def test_generation_prompt_opens_an_assistant_turn(arch, tmp_path):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir(arch, tmp_path))
    with_prompt = tokenizer.apply_chat_template(CONVERSATION[:2], add_generation_prompt=True, tokenize=False)
    without = tokenizer.apply_chat_template(CONVERSATION[:2], add_generation_prompt=False, tokenize=False)
    assert with_prompt.startswith(without) and with_prompt != without
    full = tokenizer.apply_chat_template(CONVERSATION[:3], tokenize=False)
    assert full.startswith(with_prompt)  # the answer continues exactly where generation starts


@pytest.mark.slow
def test_seed_decides_the_weights():
    import torch

    batch = torch.tensor([[5, 6, 7]])
    logits = [tiny_model("llama", seed=s)[0].eval()(batch).logits for s in (0, 0, 1)]
    assert torch.equal(logits[0], logits[1])
    assert not torch.equal(logits[0], logits[2])


@pytest.mark.slow
def test_tiny_model_dir_builds_once_and_reuses(tmp_path):
    first = tiny_model_dir("gpt2", tmp_path)
    stamp = (first / "model.safetensors").stat().st_mtime_ns
    again = tiny_model_dir("gpt2", tmp_path)
    assert again == first
    assert (again / "model.safetensors").stat().st_mtime_ns == stamp
    assert [p.name for p in tmp_path.iterdir()] == [first.name]  # no scratch folder left behind


def test_unknown_architecture_is_a_user_error(tmp_path):
    with pytest.raises(SelfCorrectError, match="did you mean 'llama'"):
        build_tiny_model("lama", tmp_path)
