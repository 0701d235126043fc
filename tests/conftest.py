"""Test-session environment: no hub access, and a private selfcorrect cache.

Tests must neither read nor write the user's `~/.cache/selfcorrect`: a warm generation cache would make
reproducibility tests pass trivially, and a stale one could make them fail. No test needs the default sandbox
model (tests pretrain tiny ones in seconds), so an empty cache costs nothing.
"""

import os
import tempfile


def pytest_configure(config):
    os.environ["SELFCORRECT_CACHE"] = tempfile.mkdtemp(prefix="selfcorrect-test-cache-")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
