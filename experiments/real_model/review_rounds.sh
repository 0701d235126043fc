#!/usr/bin/env bash
# Intrinsic review on SmolLM2-135M-Instruct, rounds 1-4 (the first answer and three reviews), on NQ-open, GSM8K and
# BBQ (Age), greedy and at T=0.7 / top-p 0.9 (arXiv 2406.02378's setting: does uncertainty converge while accuracy
# stays put?). Every run is an ordinary `selfcorrect eval` folder under $OUT; `python experiments/real_model/table.py
# $OUT/*` prints the per-round tables of docs/real-model.md. Seeds: --seed 0 (sampling); the question sets are the
# first N test questions of each benchmark file in src/selfcorrect/data.
# Usage: bash experiments/real_model/review_rounds.sh OUT [greedy|sampled|all]
set -euo pipefail
OUT=${1:?usage: review_rounds.sh OUT [greedy|sampled|all]}
WHICH=${2:-all}
SC="${SELFCORRECT:-selfcorrect}"
MODEL=smollm2-135m-instruct

run() {  # name, then eval flags; skips a finished run, resumes an interrupted one
  local name=$1; shift
  if [ -f "$OUT/$name/summary.json" ]; then return; fi
  local resume=(); [ -d "$OUT/$name" ] && resume=(--resume)
  $SC eval --model $MODEL --rounds 3 --seed 0 --quiet --out "$OUT/$name" "${resume[@]}" "$@"
}

for mode in greedy sampled; do
  [ "$WHICH" = all ] || [ "$WHICH" = $mode ] || continue
  if [ $mode = greedy ]; then sampling=(--temperature 0); else sampling=(--temperature 0.7 --set top_p=0.9); fi
  run nq-$mode --task nq-open --limit 100 --set max_new_tokens=64 "${sampling[@]}"
  run bbq-$mode --task bbq --limit 150 --question-prompt bbq-question --review-prompt bbq-review \
    --set max_new_tokens=64 "${sampling[@]}"
  run gsm8k-$mode --task gsm8k --limit 50 --review-prompt review-step-by-step --set max_new_tokens=256 \
    "${sampling[@]}"
done
