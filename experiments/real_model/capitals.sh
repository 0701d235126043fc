#!/usr/bin/env bash
# Section C of docs/real-model.md: SmolLM2-135M-Instruct (built in) on the `capitals` task, where it half knows the
# answers. `review`: two plain review rounds on the validation split (all of it), greedy and at T = 0.7 / top-p
# 0.9 with seeds 0-2, then greedy on the test split, and Checking-as-Context there; `stasc`: STaSC EIE trained on
# it (configs/stasc/smollm2-capitals.yaml) and its equal-budget STaR and gold controls; `insec`: InSeC with
# on-policy negatives against SFT at equal steps (configs/insec/smollm2-capitals.yaml).
# `selfcorrect report $OUT/test-greedy $OUT/test-cac $OUT/*-seed0 $OUT/insec/*-seed0` prints the
# method-against-method table.
# `python experiments/real_model/table.py $OUT/*` prints the tables.
# Usage: bash experiments/real_model/capitals.sh OUT [review|stasc|insec|all]
set -euo pipefail
OUT=${1:?usage: capitals.sh OUT [review|stasc|insec|all]}
WHICH=${2:-all}
SC="${SELFCORRECT:-selfcorrect}"

run() {  # name, then eval flags; skips a finished run, resumes an interrupted one
  local name=$1; shift
  if [ -f "$OUT/$name/summary.json" ]; then return; fi
  local resume=(); [ -d "$OUT/$name" ] && resume=(--resume)
  $SC eval --model smollm2-135m-instruct --task capitals --quiet --out "$OUT/$name" "${resume[@]}" "$@"
}

if [ "$WHICH" = all ] || [ "$WHICH" = review ]; then
  run validation-greedy --split validation --rounds 2 --temperature 0 --seed 0
  for seed in 0 1 2; do
    run validation-t0.7-seed$seed --split validation --rounds 2 --temperature 0.7 --set top_p=0.9 --seed $seed
  done
  run test-greedy --split test --rounds 2 --temperature 0 --seed 0
  run test-cac --split test --rounds 1 --temperature 0 --seed 0 --method cac --check-prompt cac-check-correct
fi
if [ "$WHICH" = all ] || [ "$WHICH" = stasc ]; then
  # STaSC EIE, then its equal-budget controls: STaR (own right first answers) and gold answers, as many examples
  # and optimiser steps per iteration as the STaSC run of the same seed used; seeds from $SEEDS (default 0 1 2)
  for seed in ${SEEDS:-0 1 2}; do
    for method in stasc star gold; do
      out="$OUT/$method-seed$seed"
      if [ -f "$out/summary.json" ]; then continue; fi
      budget=(); [ $method != stasc ] && budget=(--set method=$method --set budget_from="$OUT/stasc-seed$seed")
      resume=(); [ -d "$out" ] && resume=(--resume)
      $SC stasc --config configs/stasc/smollm2-capitals.yaml --seed $seed --quiet --out "$out" "${budget[@]}" \
        "${resume[@]}"
    done
  done
fi
if [ "$WHICH" = all ] || [ "$WHICH" = insec ]; then
  resume=(); [ -d "$OUT/insec" ] && resume=(--resume)
  $SC insec compare --config configs/insec/smollm2-capitals.yaml --arms insec-on-policy,sft --seeds 0 --quiet \
    --out "$OUT/insec" "${resume[@]}"
fi
