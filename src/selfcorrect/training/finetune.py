"""The one fine-tuning function every training method uses: conversations in, a plain HF model folder out.

STaSC trains on corrections only, InSeC on `mistake <marker> correction` with no loss (or unlikelihood) on the
mistake, STaR on whole answers; they differ only in *which tokens* carry loss. So the loss mask is computed once
per conversation by `masks.tokenize_conversation` (from the chat template, never from token ids) and TRL's
`SFTTrainer` receives the dataset already tokenized, with `labels` (-100 off the mask). TRL 1.16 takes such a
dataset as is: a dataset with `input_ids` skips its tokenization, and an existing `labels` column is used
unchanged by its preparation and by its collator. We leave TRL's `max_length` unset and truncate here instead,
because its truncation cuts `input_ids` and `labels` but not our `neg_mask`.

The trainer's `compute_loss` is `loss.masked_loss`: the LM head is applied only at the positions that carry loss,
in chunks sized by `loss_memory_mb`, so memory does not grow with vocabulary × sequence length (TRL's own loss
bounds it only on GPUs). The same function adds InSeC's optional unlikelihood term on the `neg_mask` tokens.

Whatever the method (full or LoRA, one process or several), the result is saved as an ordinary model folder —
LoRA adapters are merged first — written under a temporary name and renamed, so the `hf` backend can load it and
a killed run never leaves half a model behind. Weights are trained and saved in float32: on the GPU, `bf16` is
mixed precision over float32 master weights, because AdamW updates at a learning rate of 1e-6 vanish in bf16.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from selfcorrect.config import StrictModel
from selfcorrect.errors import SelfCorrectError
from selfcorrect.models import declare_causal_lm_loss
from selfcorrect.runs import write_json
from selfcorrect.training.loss import masked_loss
from selfcorrect.training.masks import IGNORE, tokenize_conversation

Conversation = Sequence[dict[str, Any]]

#: LoRA targets per `config.model_type`: the attention projections. GPT-2's are `Conv1D` layers, stored transposed,
#: hence `fan_in_fan_out`; Phi-3 fuses q, k and v into one `qkv_proj`. Other types fall back to PEFT's own table.
LORA_TARGETS: dict[str, tuple[str, ...]] = {
    "gpt2": ("c_attn", "c_proj"),
    "llama": ("q_proj", "k_proj", "v_proj", "o_proj"),
    "mistral": ("q_proj", "k_proj", "v_proj", "o_proj"),
    "qwen2": ("q_proj", "k_proj", "v_proj", "o_proj"),
    "qwen3": ("q_proj", "k_proj", "v_proj", "o_proj"),
    "phi3": ("qkv_proj", "o_proj"),
}
FINETUNE_FILE = "finetune.json"


class FinetuneConfig(StrictModel):
    """Hyper-parameters of one fine-tuning call. `max_steps` overrides `epochs`: equal-budget controls need exact
    step counts. `use_cpu` and `bf16` default to what the machine can do (bf16 is never used on the CPU, where it is
    slower than float32); `report_to` names a tracker TRL should log to, imported only when named.
    `loss_memory_mb` is the memory the loss may spend on logits at once (see `loss`)."""

    method: Literal["full", "lora"] = "full"
    lora_r: int = Field(8, gt=0)
    lora_alpha: int = Field(16, gt=0)
    lora_dropout: float = Field(0.0, ge=0.0, lt=1.0)
    lora_target_modules: list[str] | None = None
    learning_rate: float = Field(1e-5, gt=0.0)
    epochs: float = Field(1.0, gt=0.0)
    max_steps: int | None = Field(None, gt=0)
    batch_size: int = Field(8, gt=0)
    gradient_accumulation_steps: int = Field(1, gt=0)
    weight_decay: float = Field(0.0, ge=0.0)
    warmup_ratio: float = Field(0.0, ge=0.0, lt=1.0)
    lr_scheduler: Literal["cosine", "linear", "constant", "constant_with_warmup"] = "linear"
    max_length: int | None = Field(None, gt=0)
    seed: int = 0
    unlikelihood_weight: float = Field(0.0, ge=0.0)
    loss_memory_mb: float = Field(256.0, gt=0.0)
    use_cpu: bool | None = None
    report_to: Literal["wandb", "mlflow", "tensorboard"] | None = None
    bf16: bool | None = None
    gradient_checkpointing: bool = False


@dataclass
class FinetuneResult:
    out_dir: Path
    steps: int
    train_loss_curve: list[float]
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "out_dir": str(self.out_dir)}


def load_model(model_dir: str | Path) -> tuple[Any, Any]:
    """Model (float32, see the module docstring) and tokenizer from a local folder or hub id; no remote code."""
    name = str(model_dir)
    if not Path(name).exists() and (name.startswith((".", "/", "~")) or name.count("/") > 1):
        raise SelfCorrectError(f"model folder not found: {name}")  # not a hub id: say so, not "bad repo id"
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(name)
        model = AutoModelForCausalLM.from_pretrained(name, dtype=torch.float32)
    except (OSError, ValueError) as exc:
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise SelfCorrectError(f"cannot load model {model_dir}: {first_line}") from None
    return declare_causal_lm_loss(model), tokenizer


def tokenize_dataset(tokenizer: Any, conversations: Sequence[Conversation], loss_on: str,
                     replay: Sequence[Conversation] | None = None, max_length: int | None = None,
                     keep_neg_mask: bool = False) -> list[dict[str, list[int]]]:
    """Training records: `conversations` under `loss_on`, then `replay` with loss on every assistant turn.

    Replay is data from the model's earlier training (the sandbox lessons mix pretraining conversations into each
    fine-tuning batch so corrections-only training does not erode first attempts), so all of what the model says
    in it is learnt. Records are truncated to `max_length` (keeping the start); those left with no trained token
    are dropped, as they would add nothing but padding.
    """
    tagged = [(c, loss_on) for c in conversations] + [(c, "all_assistant") for c in replay or ()]
    records = []
    for conversation, mode in tagged:
        record = tokenize_conversation(tokenizer, conversation, mode)
        if max_length is not None:
            record = {key: values[:max_length] for key, values in record.items()}
        if not keep_neg_mask:
            record.pop("neg_mask")
        if any(label != IGNORE for label in record["labels"]) or any(record.get("neg_mask", ())):
            records.append(record)
    if not records:
        raise SelfCorrectError(f"no conversation has a trainable token under loss_on={loss_on!r}"
                               + (f" within max_length={max_length}" if max_length else ""))
    return records


class _Collator:
    """TRL's padding collator (right padding, labels padded with -100), plus `neg_mask` padded with 0."""

    def __init__(self, pad_token_id: int):
        from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

        self.base = DataCollatorForLanguageModeling(pad_token_id=pad_token_id)

    def __call__(self, examples: list[dict[str, Any]]) -> dict[str, Any]:
        import torch
        from torch.nn.utils.rnn import pad_sequence

        batch = self.base(examples)
        if "neg_mask" in examples[0]:
            batch["neg_mask"] = pad_sequence([torch.tensor(e["neg_mask"]) for e in examples], batch_first=True)
        return batch


def _trainer_class() -> type:
    """`SFTTrainer` whose loss is `loss.masked_loss`: bounded memory, and unlikelihood on `neg_mask` tokens."""
    from trl import SFTTrainer

    class SelfCorrectTrainer(SFTTrainer):
        unlikelihood_weight = 0.0
        loss_memory_mb = 256.0

        def compute_loss(self, model: Any, inputs: dict[str, Any], return_outputs: bool = False,
                         num_items_in_batch: Any = None) -> Any:
            inputs = dict(inputs)
            labels, neg_mask = inputs.pop("labels"), inputs.pop("neg_mask", None)
            loss, outputs = masked_loss(model, inputs, labels, neg_mask, self.unlikelihood_weight,
                                        num_items_in_batch, self.loss_memory_mb)
            # As in TRL's loss: the token count spans every rank, and DDP averages the gradients across ranks
            if self.args.average_tokens_across_devices and num_items_in_batch is not None:
                loss = loss * self.accelerator.num_processes
            return (loss, outputs) if return_outputs else loss

    return SelfCorrectTrainer


def _peft_config(model: Any, config: FinetuneConfig) -> Any:
    from peft import LoraConfig

    model_type = model.config.model_type
    targets = config.lora_target_modules or LORA_TARGETS.get(model_type)
    return LoraConfig(r=config.lora_r, lora_alpha=config.lora_alpha, lora_dropout=config.lora_dropout,
                      target_modules=list(targets) if targets else None, fan_in_fan_out=model_type == "gpt2",
                      task_type="CAUSAL_LM")


def build_trainer(model: Any, tokenizer: Any, records: list[dict[str, list[int]]], config: FinetuneConfig,
                  output_dir: str | Path, quiet: bool = False) -> Any:
    """The configured trainer over pre-tokenized `records` (also used by tests to inspect the exact loss)."""
    import torch
    from datasets import Dataset
    from transformers import PrinterCallback, ProgressCallback, set_seed
    from trl import SFTConfig

    use_cpu = config.use_cpu if config.use_cpu is not None else not torch.cuda.is_available()
    bf16 = (not use_cpu and torch.cuda.is_bf16_supported()) if config.bf16 is None else config.bf16
    seed = config.seed % 2**32  # transformers seeds numpy, which takes 32 bits; method seeds are 63-bit hashes
    if bf16 and use_cpu:
        raise SelfCorrectError("bf16=True on the CPU: without bf16 hardware it is slower than float32 here; "
                               "leave bf16 unset")
    args = SFTConfig(
        output_dir=str(output_dir), learning_rate=config.learning_rate, num_train_epochs=config.epochs,
        max_steps=config.max_steps or -1, per_device_train_batch_size=config.batch_size,
        gradient_accumulation_steps=config.gradient_accumulation_steps, weight_decay=config.weight_decay,
        warmup_steps=config.warmup_ratio, lr_scheduler_type=config.lr_scheduler, seed=seed,
        use_cpu=use_cpu, bf16=bf16, activation_checkpointing=config.gradient_checkpointing,
        report_to=config.report_to or "none", logging_strategy="steps", logging_steps=1, save_strategy="no",
        eval_strategy="no", disable_tqdm=True, max_length=None, packing=False, remove_unused_columns=False,
        dataset_num_proc=None, ddp_find_unused_parameters=False)
    set_seed(seed)  # before TRL wraps the model in LoRA, whose initialisation draws random numbers
    trainer_class = _trainer_class()
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    try:
        trainer = trainer_class(model=model, args=args, train_dataset=Dataset.from_list(records),
                                processing_class=tokenizer, data_collator=_Collator(pad_id),
                                peft_config=_peft_config(model, config) if config.method == "lora" else None)
    except ValueError as exc:  # PEFT's "Please specify `target_modules`" / "Target modules [...] not found"
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        if config.method == "lora" and "target" in message.lower():
            raise SelfCorrectError(f"LoRA on model type {model.config.model_type!r}: {message} (set "
                                   "lora_target_modules to the names of its attention projections)") from None
        raise
    if config.method == "lora" and trainer.is_fsdp_enabled:
        raise SelfCorrectError("LoRA under FSDP is not supported here (merging needs the unsharded adapters); "
                               "use full fine-tuning with FSDP, or DDP / DeepSpeed ZeRO-2 for LoRA")
    trainer.unlikelihood_weight = config.unlikelihood_weight
    trainer.loss_memory_mb = config.loss_memory_mb
    trainer.remove_callback(PrinterCallback)  # with tqdm off, the Trainer prints every log dict instead
    trainer.remove_callback(ProgressCallback)
    if not quiet:
        trainer.add_callback(_labelled_bar_callback())
    return trainer


def _labelled_bar_callback() -> Any:
    """One labelled "fine-tuning" bar (ours, rich) instead of the Trainer's raw tqdm bar and its per-step log lines
    (the loss curve goes to finetune.json); drawn by the main process only."""
    from transformers import TrainerCallback

    from selfcorrect.progress import Progress

    class LabelledBar(TrainerCallback):
        progress: Progress | None = None

        def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            if state.is_world_process_zero:
                self.progress = Progress().__enter__()
                self.progress.add("fine-tuning", state.max_steps)

        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            if self.progress is not None:
                self.progress.advance("fine-tuning")

        def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            if self.progress is not None:
                self.progress.__exit__(None, None, None)
                self.progress = None

    return LabelledBar()


@contextlib.contextmanager
def _progress_bars(enabled: bool) -> Iterator[None]:
    """Silence transformers' load and save progress bars when quiet, restoring the caller's setting after."""
    from transformers.utils import logging

    before = logging.is_progress_bar_enabled()
    if not enabled:
        logging.disable_progress_bar()
    try:
        yield
    finally:
        if before and not enabled:
            logging.enable_progress_bar()


def _publish(staging: Path, out: Path) -> None:
    """Rename the finished `staging` folder to `out`, replacing an older `out` only once the new one is complete."""
    old = None
    if out.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
        os.replace(out, old / out.name)
    os.replace(staging, out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _save(trainer: Any, tokenizer: Any, staging: Path, out: Path, summary: dict[str, Any], quiet: bool) -> None:
    """Merge LoRA, save model + tokenizer + summary into `staging` and publish it; the main process writes.

    Under FSDP the full state dict is gathered from every rank first (a collective, so all ranks call it).
    """
    from peft import PeftModel

    state_dict = trainer.accelerator.get_state_dict(trainer.model) if trainer.is_fsdp_enabled else None
    if trainer.is_world_process_zero():
        model = trainer.accelerator.unwrap_model(trainer.model)
        if isinstance(model, PeftModel):
            model = model.merge_and_unload()
        try:
            with _progress_bars(not quiet):
                model.save_pretrained(staging, state_dict=state_dict)
            tokenizer.save_pretrained(staging)
            write_json(staging / FINETUNE_FILE, summary)
            _publish(staging, out)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
    trainer.accelerator.wait_for_everyone()


def _length_limit(model: Any, config: FinetuneConfig) -> int | None:
    """`config.max_length`, capped by the model's positions (the sandbox GPT-2 has only a few dozen)."""
    limits = [n for n in (config.max_length, getattr(model.config, "max_position_embeddings", None)) if n]
    return min(limits) if limits else None


def finetune(model_dir: str | Path, conversations: Sequence[Conversation], out_dir: str | Path,
             config: FinetuneConfig | None = None, loss_on: str = "last_assistant",
             replay: Sequence[Conversation] | None = None, quiet: bool = False) -> FinetuneResult:
    """Fine-tune the model in `model_dir` on `conversations` (loss placed by `loss_on`, see `masks`) and save the
    result as a plain model folder `out_dir`. Runs as one process, or as one rank of `launch.finetune_distributed`.
    `seconds` covers loading, tokenizing and training, not the final save."""
    config = config or FinetuneConfig()
    started = time.perf_counter()
    with _progress_bars(not quiet):
        model, tokenizer = load_model(model_dir)
    records = tokenize_dataset(tokenizer, conversations, loss_on, replay, _length_limit(model, config),
                               keep_neg_mask=config.unlikelihood_weight > 0)
    out = Path(out_dir)
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = out.with_name(f".{out.name}.partial")
    if int(os.environ.get("RANK", "0")) == 0:
        shutil.rmtree(staging, ignore_errors=True)  # a killed earlier attempt's leftovers
    use_cache = getattr(model.config, "use_cache", True)
    trainer = build_trainer(model, tokenizer, records, config, staging, quiet)
    trainer.train()
    model.config.use_cache = use_cache  # the Trainer turns the KV cache off for training; generation wants it back
    curve = [float(entry["loss"]) for entry in trainer.state.log_history if "loss" in entry]
    result = FinetuneResult(out, trainer.state.global_step, curve, time.perf_counter() - started)
    summary = {"base_model": str(model_dir), "loss_on": loss_on, "examples": len(records),
               "replay": len(replay or ()), "processes": trainer.accelerator.num_processes,
               "config": config.model_dump(), **result.to_dict()}
    _save(trainer, tokenizer, staging, out, summary, quiet)
    return result
