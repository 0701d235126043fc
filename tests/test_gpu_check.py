"""benchmarks/gpu_check.sh, the prepared GPU check, in its CPU dry run: every step is recorded in order, the CUDA
steps skip with a reason, the CPU halves really run, and one failing step does not stop the others."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_check.sh"
STEPS = ["env", "install", "model", "vllm_tests", "throughput", "stasc", "icalign"]


def _dry_run(out: Path, python: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "OUT": str(out), "GPU_CHECK_DRY_RUN": "1", "GPU_CHECK_PYTHON": python,
           "OMP_NUM_THREADS": "1"}
    return subprocess.run(["bash", str(SCRIPT)], env=env, capture_output=True, text=True, timeout=600)


@pytest.mark.slow
def test_the_dry_run_skips_the_cuda_steps_and_runs_the_rest(tmp_path):
    done = _dry_run(tmp_path, sys.executable)
    assert done.returncode == 0, done.stdout + done.stderr
    summary = json.loads((tmp_path / "summary.json").read_text())
    status = {s["step"]: (s["status"], s["reason"]) for s in summary["steps"]}
    assert [s["step"] for s in summary["steps"]] == STEPS
    assert status["install"][0] == status["model"][0] == status["stasc"][0] == "skipped"
    assert status["install"][1].startswith("dry run: would create") and "needs CUDA" in status["stasc"][1]
    assert all(status[s] == ("ok", "") for s in ("env", "vllm_tests", "throughput", "icalign"))
    tests = (tmp_path / "logs" / "vllm_tests.log").read_text()
    assert " passed" in tests and "vllm is not installed" in tests  # stand-in tests ran, real-engine ones skipped
    throughput = json.loads((tmp_path / "throughput.json").read_text())
    assert [r["backend"] for r in throughput["rows"]] == ["hf"] and throughput["rows"][0]["tok_per_s"] > 0
    assert json.loads((tmp_path / "icalign-paper" / "train.json").read_text())["steps"] == 2
    for step in STEPS:
        assert (tmp_path / "logs" / f"{step}.log").is_file()


def test_a_failing_step_is_recorded_and_the_others_still_run(tmp_path):
    broken = tmp_path / "broken-python"
    broken.write_text("#!/bin/sh\necho 'no python here' >&2\nexit 3\n")
    broken.chmod(0o755)
    done = _dry_run(tmp_path / "out", str(broken))
    assert done.returncode == 1
    steps = json.loads((tmp_path / "out" / "summary.json").read_text())["steps"]
    assert [s["step"] for s in steps] == STEPS
    failed = {s["step"]: s["reason"] for s in steps if s["status"] == "failed"}
    assert set(failed) == {"vllm_tests", "throughput", "icalign"}
    assert failed["vllm_tests"] == "exit 3: no python here"
