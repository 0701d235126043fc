"""Run `finetune` as N processes: `accelerate launch` starts N copies of this module, each one rank of the same run.

The parent writes the conversations to JSONL and the call's arguments to a JSON job file in a temporary folder,
launches `python -m selfcorrect.training.launch --args-json JOB` under `accelerate launch`, and reads back the
result that rank 0 writes next to the job file. Training itself is the unchanged `finetune`: the Trainer inside
each rank picks up the process group from the launcher's environment (gloo on the CPU, NCCL on GPUs).

Without an accelerate config, the launch is plain multi-process data parallelism (`--multi_gpu`, which on a
machine without GPUs is still torchrun-style processes; each rank trains on the CPU because
`FinetuneConfig.use_cpu` defaults to "no CUDA here"). `configs/accelerate/` holds configs for DDP on CPU and GPU,
FSDP and DeepSpeed ZeRO-2. The effective batch is `batch_size × gradient_accumulation_steps × num_processes`.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from selfcorrect.errors import SelfCorrectError
from selfcorrect.training.finetune import Conversation, FinetuneConfig, FinetuneResult

RESULT_FILE = "result.json"
ERROR_PREFIX = "error: "  # how a rank reports a SelfCorrectError, so the parent can repeat it


def _write_jsonl(path: Path, conversations: Sequence[Conversation]) -> None:
    with path.open("w") as handle:
        for conversation in conversations:
            handle.write(json.dumps(list(conversation), ensure_ascii=False) + "\n")


def _read_jsonl(path: Path) -> list[list[dict]]:
    with path.open() as handle:
        return [json.loads(line) for line in handle if line.strip()]


def _failure(stdout: str | None, stderr: str | None) -> str:
    """The ranks' own one-line error when one printed it; for a rank killed by a signal, torchrun's root cause (its
    rank and signal); else the last line that names an error, or the last line of the captured output."""
    lines = [line.strip() for line in ((stdout or "") + (stderr or "")).splitlines() if line.strip()]
    errors = [line.removeprefix(ERROR_PREFIX) for line in lines if line.startswith(ERROR_PREFIX)]
    if errors:
        return errors[-1]
    if "Root Cause (first observed failure):" in lines:
        cause = lines[lines.index("Root Cause (first observed failure):"):]
        facts = [line for line in cause if line.startswith(("rank", "exitcode"))][:2]
        aborts = [line for line in lines if line.startswith("terminate called")]
        return "; ".join(" ".join(line.split()) for line in facts + aborts[:1])
    raised = [line for line in lines if "Error" in line or "error:" in line]  # e.g. a rank's last traceback line
    if raised:
        return raised[-1]
    return lines[-1] if lines else "see the output above"


def launch_command(job: Path, num_processes: int, accelerate_config: str | Path | None) -> list[str]:
    """The `accelerate launch` command line that runs `num_processes` ranks of this module on `job`."""
    launcher = [sys.executable, "-m", "accelerate.commands.launch"]
    if accelerate_config is None:
        launcher += ["--multi_gpu", "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
                     "--main_process_port", "0"]
    else:
        launcher += ["--config_file", str(accelerate_config)]
    return [*launcher, "--num_processes", str(num_processes), "-m", "selfcorrect.training.launch",
            "--args-json", str(job)]


def finetune_distributed(model_dir: str | Path, conversations: Sequence[Conversation], out_dir: str | Path,
                         config: FinetuneConfig | None = None, loss_on: str = "last_assistant",
                         replay: Sequence[Conversation] | None = None, *, num_processes: int,
                         accelerate_config: str | Path | None = None, quiet: bool = False) -> FinetuneResult:
    """`finetune(...)` as `num_processes` processes; same arguments, same result, same saved folder.

    When `quiet`, the ranks' output is captured and only its tail is shown if they fail; otherwise it streams.
    """
    if num_processes < 1:
        raise SelfCorrectError(f"num_processes must be at least 1, got {num_processes}")
    if accelerate_config is not None and not Path(accelerate_config).is_file():
        raise SelfCorrectError(f"accelerate config not found: {accelerate_config}")
    config = config or FinetuneConfig()
    with tempfile.TemporaryDirectory(prefix="selfcorrect-finetune-") as tmp:
        folder = Path(tmp)
        _write_jsonl(folder / "conversations.jsonl", conversations)
        _write_jsonl(folder / "replay.jsonl", replay or ())
        job = folder / "job.json"
        job.write_text(json.dumps({"model_dir": str(model_dir), "out_dir": str(Path(out_dir).absolute()),
                                   "config": config.model_dump(), "loss_on": loss_on, "quiet": quiet}))
        env = {**os.environ, "TOKENIZERS_PARALLELISM": "false"}
        proc = subprocess.run(launch_command(job, num_processes, accelerate_config), env=env, check=False,
                              capture_output=quiet, text=True)
        result_file = folder / RESULT_FILE
        if proc.returncode != 0 or not result_file.is_file():
            raise SelfCorrectError(f"distributed fine-tuning with {num_processes} processes failed "
                                   f"(exit {proc.returncode}): {_failure(proc.stdout, proc.stderr)}")
        data = json.loads(result_file.read_text())
    return FinetuneResult(Path(data["out_dir"]), data["steps"], data["train_loss_curve"], data["seconds"])


def main(argv: Sequence[str] | None = None) -> int:
    """One rank: run `finetune` on the job file; rank 0 writes the result beside it."""
    from selfcorrect.config import build_config
    from selfcorrect.training.finetune import finetune

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--args-json", required=True, type=Path)
    job_file = parser.parse_args(argv).args_json
    try:
        job = json.loads(job_file.read_text())
        folder = job_file.parent
        result = finetune(job["model_dir"], _read_jsonl(folder / "conversations.jsonl"), job["out_dir"],
                          build_config(FinetuneConfig, job["config"], source=str(job_file)), job["loss_on"],
                          _read_jsonl(folder / "replay.jsonl"), quiet=job["quiet"])
    except SelfCorrectError as exc:
        print(f"{ERROR_PREFIX}{exc}", file=sys.stderr)
        return SelfCorrectError.exit_code
    if int(os.environ.get("RANK", "0")) == 0:
        from selfcorrect.runs import write_json

        write_json(folder / RESULT_FILE, result.to_dict())
    _leave_process_group()
    return 0


def _leave_process_group() -> None:
    """Wait for every rank, then tear the process group down before the interpreter exits.

    Left to interpreter shutdown, gloo's worker threads are sometimes destroyed while still joinable and the rank
    aborts ("terminate called without an active exception", SIGABRT); torchrun then kills the other ranks, rank 0
    possibly before it has written the result. Measured here on 2-process, 1-step launches of a tiny model: 2
    failures in 17 launches without this, none in 40 with it.
    """
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


if __name__ == "__main__":
    sys.exit(main())
