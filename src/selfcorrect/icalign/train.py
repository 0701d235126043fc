"""Training loop: seeded, checkpointed every K steps, resumable, and it ends with the FINAL weights in model.pt.

A run folder holds

    config.yaml      the resolved RunConfig (resume refuses a different one)
    checkpoint.pt    the latest state: model, Adam, data-generator state, step, losses (replaced every K steps)
    model.pt         the final weights, written once the last step is done; evaluation reads only this file
    train.json       loss curve, timings, environment

Everything random is drawn from two seeded streams: torch's global generator initialises the weights, a separate
generator draws the training batches. The checkpoint stores the data generator's state with the Adam state, so a run
resumed from step k draws the same batches and reaches bit-for-bit the same weights as one that was never stopped.
(The reference evaluated the step-2500 checkpoint of a 3000-step run; here there is no other file to pick up.)
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from selfcorrect.errors import SelfCorrectError
from selfcorrect.icalign.data import sample_batch
from selfcorrect.icalign.losses import alignment_loss, training_loss
from selfcorrect.icalign.model import ICATransformer, ModelConfig
from selfcorrect.icalign.presets import RunConfig
from selfcorrect.runs import RunFolder, environment_info, removes_fresh_output_on_error, write_json

CHECKPOINT = "checkpoint.pt"
FINAL = "model.pt"
TRAIN_SUMMARY = "train.json"
# Offset between the weight-init seed and the data seed, so the two streams never draw the same numbers.
DATA_SEED_OFFSET = 1_000_003


def build_model(config: RunConfig) -> ICATransformer:
    return ICATransformer(ModelConfig(dim=config.task.dim, n_points=config.task.n_points,
                                      **config.model.model_dump()))


def load_final(run_dir: str | Path, config: RunConfig) -> ICATransformer:
    """The model of a FINISHED run (model.pt), in eval mode."""
    path = Path(run_dir) / FINAL
    if not path.is_file():
        raise SelfCorrectError(f"{run_dir} has no {FINAL}: training did not finish; continue it with --resume")
    model = build_model(config)
    model.load_state_dict(torch.load(path, weights_only=True, map_location="cpu"))
    return model.eval()


def train_step(model: ICATransformer, optimizer: torch.optim.Optimizer, config: RunConfig,
               data: torch.Generator) -> float:
    """One Adam step on a fresh batch drawn from `data`; returns the batch loss."""
    batch = sample_batch(config.train.batch_size, config.task.n_points, config.task.dim, data)
    per_position = alignment_loss(model(batch.tokens()), batch.responses, batch.shown, config.task.loss,
                                  config.task.reward)
    loss = training_loss(per_position)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return loss.item()


def _save(obj: Any, path: Path) -> None:
    """torch.save via a temporary file and a rename, so a kill mid-write leaves the previous checkpoint intact."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        torch.save(obj, tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@removes_fresh_output_on_error
def train(config: RunConfig, out: str | Path, resume: bool = False, quiet: bool = False) -> dict[str, Any]:
    """Train one model into `out`; with `resume`, continue from its checkpoint (a finished run is left as is)."""
    folder = RunFolder.open(out, config.model_dump(), resume=resume)
    summary_path = folder.path / TRAIN_SUMMARY
    if resume and (folder.path / FINAL).is_file() and summary_path.is_file():
        return json.loads(summary_path.read_text())

    tc = config.train
    torch.manual_seed(tc.seed)
    model = build_model(config)
    optimizer = torch.optim.Adam(model.parameters(), lr=tc.lr)
    data = torch.Generator().manual_seed(tc.seed + DATA_SEED_OFFSET)
    step, losses, seconds = 0, [], 0.0
    checkpoint = folder.path / CHECKPOINT
    if resume and checkpoint.is_file():
        state = torch.load(checkpoint, weights_only=True)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        data.set_state(state["data_rng"])
        step, losses, seconds = state["step"], state["losses"], state["seconds"]
        if not quiet:
            print(f"resuming {folder.path} at step {step}")

    log_every = max(1, tc.steps // 20)
    model.train()
    start, start_step = time.perf_counter(), step
    while step < tc.steps:
        losses.append(train_step(model, optimizer, config, data))
        step += 1
        if not quiet and (step % log_every == 0 or step == tc.steps):
            print(f"step {step}/{tc.steps} loss {losses[-1]:.4f}")
        if step % tc.checkpoint_every == 0 or step == tc.steps:
            _save({"model": model.state_dict(), "optimizer": optimizer.state_dict(), "data_rng": data.get_state(),
                   "step": step, "losses": losses, "seconds": seconds + time.perf_counter() - start}, checkpoint)

    elapsed = time.perf_counter() - start
    _save(model.state_dict(), folder.path / FINAL)
    summary = {
        "steps": tc.steps,
        "final_loss": losses[-1],
        "first_loss": losses[0],
        "losses": losses,
        "seconds": seconds + elapsed,
        "steps_per_s_this_session": (step - start_step) / elapsed if elapsed > 0 and step > start_step else None,
        "params": model.num_params(),
        "torch_threads": torch.get_num_threads(),
        "environment": environment_info(),
    }
    write_json(summary_path, summary)
    return summary
