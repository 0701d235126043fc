"""Training: one `finetune` for every method, loss masks from the chat template, multi-process launching.

Nothing here imports torch, transformers or TRL at import time, so the CLI starts instantly.
"""

from __future__ import annotations

from typing import Any

from selfcorrect.training.finetune import FinetuneConfig, FinetuneResult, finetune
from selfcorrect.training.masks import tokenize_conversation

__all__ = ["FinetuneConfig", "FinetuneResult", "finetune", "finetune_distributed", "tokenize_conversation"]


def __getattr__(name: str) -> Any:
    # `launch` is also run as `python -m selfcorrect.training.launch`; importing it here eagerly would make runpy
    # warn in every rank that the module was already imported.
    if name == "finetune_distributed":
        from selfcorrect.training.launch import finetune_distributed

        return finetune_distributed
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
