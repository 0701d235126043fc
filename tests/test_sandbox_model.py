"""The sandbox model: batches match the chat template, pretraining learns, the result is an ordinary HF folder."""

import numpy as np
import pytest

from selfcorrect.sandbox.data import correction_batch, plain_batch, sequence_length
from selfcorrect.sandbox.tokenizer import build_tokenizer


def test_fast_batches_equal_the_chat_template_and_its_assistant_mask():
    tokenizer = build_tokenizer()
    q, y1, y2 = "3950", "33935808", "33925707"
    conversation = [{"role": "user", "content": q}, {"role": "assistant", "content": y1},
                    {"role": "user", "content": "Review your previous answer and correct it if needed."},
                    {"role": "assistant", "content": y2}]
    rendered = tokenizer.apply_chat_template(conversation, return_dict=True, return_assistant_tokens_mask=True)
    ids, mask = correction_batch([q], [y1], [y2], length=len(rendered["input_ids"]))
    assert ids[0].tolist() == rendered["input_ids"]
    # The template marks both answers as assistant tokens; training on corrections keeps only the last one.
    template_mask = np.array(rendered["assistant_masks"], dtype=bool)
    last_start = len(rendered["input_ids"]) - len(y2) - 1
    assert mask[0].tolist() == [bool(m) and i >= last_start for i, m in enumerate(template_mask)]

    plain = tokenizer.apply_chat_template(conversation[:2], return_dict=True, return_assistant_tokens_mask=True)
    ids, mask = plain_batch([q], [y1], length=len(plain["input_ids"]))
    assert ids[0].tolist() == plain["input_ids"] and mask[0].tolist() == [bool(m) for m in plain["assistant_masks"]]
    assert sequence_length(4) == len(rendered["input_ids"])


def test_template_shows_the_previous_answer_in_the_answer_slot():
    tokenizer = build_tokenizer()
    talk = [{"role": "user", "content": "12"}, {"role": "assistant", "content": "1133"},
            {"role": "user", "content": "review"}, {"role": "assistant", "content": "1134"},
            {"role": "user", "content": "review"}]
    text = tokenizer.apply_chat_template(talk, add_generation_prompt=True, tokenize=False)
    assert text == "<bos>Q12A1134<eos>C"
    assert tokenizer.apply_chat_template(talk[:1], add_generation_prompt=True, tokenize=False) == "<bos>Q12A"


@pytest.mark.slow
def test_short_pretraining_lowers_the_loss_and_saves_a_loadable_folder(tmp_path):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from selfcorrect.sandbox.cache import pretrain_to
    from selfcorrect.sandbox.pretrain import PretrainConfig, load_report

    config = PretrainConfig(n_digits=4, n_layer=1, n_embd=32, n_head=2, n_inner=64, batch_size=32, phase1_steps=80,
                            phase2_steps=40, warmup_steps=10, bootstrap_questions=64, log_every=20)
    out = pretrain_to(config, tmp_path / "model")
    report = load_report(out)
    curve = [e["loss"] for e in report["loss_curve"]]
    assert curve[-1] < 0.6 * curve[0]
    assert [e["phase"] for e in report["loss_curve"]][-1] == "phase2.1"
    assert not (tmp_path / "model.partial").exists()
    model = AutoModelForCausalLM.from_pretrained(out)
    tokenizer = AutoTokenizer.from_pretrained(out)
    prompt = tokenizer.apply_chat_template([{"role": "user", "content": "1234"}], add_generation_prompt=True,
                                           tokenize=False)
    ids = tokenizer(prompt, add_special_tokens=False, return_tensors="pt")["input_ids"]
    assert tokenizer.convert_ids_to_tokens(ids[0].tolist()) == ["<bos>", "Q", "1", "2", "3", "4", "A"]
    with torch.no_grad():
        assert model(ids).logits.shape == (1, 7, len(tokenizer))


def test_a_pretraining_stuck_above_the_noise_floor_is_flagged():
    from selfcorrect.sandbox.pretrain import stuck_warning

    def report(final_losses):
        return {"noise_floor_plain": 0.2, "loss_curve": [{"loss": 5.0}] * 10 + [{"loss": v} for v in final_losses]}

    assert stuck_warning(report([0.19, 0.2, 0.21, 0.2])) is None  # at the floor
    assert stuck_warning(report([0.3, 0.2, 0.2, 0.2])) is None  # 1.5x once, but the last four average 1.125x
    warning = stuck_warning(report([0.26, 0.26, 0.26, 0.26]))
    assert warning is not None and "0.260 is 1.30x the noise floor 0.200" in warning
