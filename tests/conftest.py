"""Test-session environment: no hub access, and a private selfcorrect cache.

Tests must neither read nor write the user's `~/.cache/selfcorrect`: a warm generation cache would make
reproducibility tests pass trivially, and a stale one could make them fail. No test needs the default sandbox
model (tests pretrain tiny ones in seconds), so an empty cache costs nothing.
"""

import os
import tempfile

import pytest


def pytest_configure(config):
    os.environ["SELFCORRECT_CACHE"] = tempfile.mkdtemp(prefix="selfcorrect-test-cache-")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(autouse=True)
def _one_thread():
    """One torch thread per test: tiny models gain nothing from more, and two multi-threaded torch processes on
    2 cores (a test and its launched ranks, or two test runs) thrash badly."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def sandbox_dir(tmp_path_factory):
    """A tiny untrained 4-digit sandbox GPT-2 (no dropout, so losses compare exactly) with the sandbox tokenizer."""
    from selfcorrect.sandbox.pretrain import PretrainConfig, build_model
    from selfcorrect.sandbox.tokenizer import save_tokenizer

    out = tmp_path_factory.mktemp("sandbox-model")
    build_model(PretrainConfig(n_digits=4, n_layer=1, n_embd=32, n_head=2, n_inner=64)).save_pretrained(out)
    save_tokenizer(out)
    return out
