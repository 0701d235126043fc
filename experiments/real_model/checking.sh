#!/usr/bin/env bash
# Checking-as-Context (arXiv 2405.18634) on SmolLM2-135M-Instruct, beside no review and intrinsic review, on BBQ
# (Age, the first 100 test items) and AdvBench (the first 100 behaviours), greedy, one (check, answer) round.
# The critic-noise control replaces the model's own check by the true verdict, inverted with probability 0, 0.25 or
# 0.5 (0.5 = a coin): is the model's self-check better than a noisy oracle, and better than chance?
# Every run is an ordinary `selfcorrect eval` folder under $OUT; the check accuracy and the gain are in each
# summary.json (`checks`), and `python experiments/real_model/table.py $OUT/*` prints the per-round tables.
# Usage: bash experiments/real_model/checking.sh OUT
set -euo pipefail
OUT=${1:?usage: checking.sh OUT}
SC="${SELFCORRECT:-selfcorrect}"
COMMON=(--model smollm2-135m-instruct --seed 0 --temperature 0 --limit 100 --quiet --set max_new_tokens=64)

run() {  # name, then eval flags; skips a finished run, resumes an interrupted one
  local name=$1; shift
  if [ -f "$OUT/$name/summary.json" ]; then return; fi
  local resume=(); [ -d "$OUT/$name" ] && resume=(--resume)
  $SC eval "${COMMON[@]}" --out "$OUT/$name" "${resume[@]}" "$@"
}

BBQ=(--task bbq --question-prompt bbq-question)
run bbq-intrinsic "${BBQ[@]}" --rounds 1 --review-prompt bbq-review
run bbq-cac "${BBQ[@]}" --method cac --rounds 1 --check-prompt cac-bbq-check-verdict
for noise in 0 0.25 0.5; do
  run bbq-cac-noise-$noise "${BBQ[@]}" --method cac --rounds 1 --check-prompt cac-bbq-check-verdict \
    --critic-noise $noise
done
ADV=(--task advbench)
run advbench-intrinsic "${ADV[@]}" --rounds 1
run advbench-cac "${ADV[@]}" --method cac --rounds 1
for noise in 0 0.5; do
  run advbench-cac-noise-$noise "${ADV[@]}" --method cac --rounds 1 --critic-noise $noise
done
