"""Token batches for sandbox pretraining, built directly as id arrays (fast) in the chat template's exact layout.

Rendering 64 conversations per step through Jinja would dominate a CPU step, so batches are assembled here with
numpy; `tests/test_sandbox_model.py` checks that these ids equal `tokenizer.apply_chat_template` on the same messages.
"""

from __future__ import annotations

import numpy as np

from selfcorrect.sandbox.tokenizer import token_id

PAD, BOS, EOS = token_id("<pad>"), token_id("<bos>"), token_id("<eos>")
Q, A, C = token_id("Q"), token_id("A"), token_id("C")
DIGIT0 = token_id("0")


def digits_to_ids(strings: list[str]) -> np.ndarray:
    return np.frombuffer("".join(strings).encode(), dtype=np.uint8).reshape(len(strings), -1).astype(np.int64) \
        - ord("0") + DIGIT0


def sequence_length(n_digits: int) -> int:
    """Length of `<bos>Q q A y1 <eos> C y2 <eos>`: the longest sequence the sandbox model sees."""
    return 1 + 1 + n_digits + 1 + 2 * n_digits + 1 + 1 + 2 * n_digits + 1


def plain_batch(questions: list[str], answers: list[str], length: int) -> tuple[np.ndarray, np.ndarray]:
    """`<bos>Q q A y <eos>`, right-padded to `length`; the loss mask covers `y <eos>` (the assistant turn)."""
    q, y = digits_to_ids(questions), digits_to_ids(answers)
    rows = len(questions)
    head = np.column_stack([np.full(rows, BOS), np.full(rows, Q), q, np.full(rows, A)])
    body = np.column_stack([y, np.full(rows, EOS)])
    return _assemble([head, body], [False, True], length)


def correction_batch(questions: list[str], attempts: list[str], corrections: list[str],
                     length: int) -> tuple[np.ndarray, np.ndarray]:
    """`<bos>Q q A y1 <eos> C y2 <eos>`; the loss mask covers only `y2 <eos>` (the correction)."""
    q, y1, y2 = digits_to_ids(questions), digits_to_ids(attempts), digits_to_ids(corrections)
    rows = len(questions)
    head = np.column_stack([np.full(rows, BOS), np.full(rows, Q), q, np.full(rows, A), y1, np.full(rows, EOS),
                            np.full(rows, C)])
    body = np.column_stack([y2, np.full(rows, EOS)])
    return _assemble([head, body], [False, True], length)


def _assemble(parts: list[np.ndarray], trained: list[bool], length: int) -> tuple[np.ndarray, np.ndarray]:
    ids = np.concatenate(parts, axis=1)
    mask = np.concatenate([np.full(p.shape, t) for p, t in zip(parts, trained, strict=True)], axis=1)
    pad = length - ids.shape[1]
    if pad < 0:
        raise ValueError(f"sequence of {ids.shape[1]} tokens does not fit in {length}")
    ids = np.pad(ids, ((0, 0), (0, pad)), constant_values=PAD)
    mask = np.pad(mask, ((0, 0), (0, pad)), constant_values=False)
    return ids, mask
