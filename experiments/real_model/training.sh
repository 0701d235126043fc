#!/usr/bin/env bash
# Section B of docs/real-model.md: the training methods on SmolLM2-135M-Instruct (built in) and NQ-open, sized for a
# 2-core CPU. STaSC EIE with the paper's prompts (configs/stasc/smollm2-nq.yaml), and InSeC with on-policy
# negatives against plain SFT at equal optimiser steps (configs/insec/smollm2-nq.yaml). Seed 0; the question sets
# are carved from the shipped NQ-open dev file by the configs' split seed. `baseline` runs the untrained model on
# the same test questions as InSeC (the first 200 of the carved test split, the same prompt): no review, one plain
# review, and Checking-as-Context. `selfcorrect report $OUT/* $OUT/insec/*-seed0 --out page.html` puts the runs
# side by side.
# Usage: bash experiments/real_model/training.sh OUT [baseline|stasc|insec|all]
set -euo pipefail
OUT=${1:?usage: training.sh OUT [baseline|stasc|insec|all]}
WHICH=${2:-all}
SC="${SELFCORRECT:-selfcorrect}"

resume() {  # --resume for a run folder that exists (an interrupted run continues from its last finished step)
  if [ -d "$1" ]; then echo --resume; fi
}

if [ "$WHICH" = all ] || [ "$WHICH" = baseline ]; then
  TEST=(--model smollm2-135m-instruct --task nq-open --set task_options.splits.train=500
        --set task_options.splits.validation=200 --set task_options.splits.test=500 --split test --limit 200
        --rounds 1 --temperature 0 --seed 0 --set max_new_tokens=48 --quiet)
  for method in intrinsic cac; do
    if [ ! -f "$OUT/nq-test-$method/summary.json" ]; then
      extra=(); [ $method = cac ] && extra=(--check-prompt cac-check-correct)
      $SC eval "${TEST[@]}" --method $method "${extra[@]}" --out "$OUT/nq-test-$method" $(resume "$OUT/nq-test-$method")
    fi
  done
fi
if [ "$WHICH" = all ] || [ "$WHICH" = stasc ]; then
  $SC stasc --config configs/stasc/smollm2-nq.yaml --seed 0 --quiet --out "$OUT/stasc-eie" \
    $(resume "$OUT/stasc-eie")
fi
if [ "$WHICH" = all ] || [ "$WHICH" = insec ]; then
  $SC insec compare --config configs/insec/smollm2-nq.yaml --arms insec-on-policy,sft --seeds 0 --quiet \
    --out "$OUT/insec" $(resume "$OUT/insec")
fi
