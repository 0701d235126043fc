#!/usr/bin/env bash
# Review prompts on SmolLM2-135M-Instruct: the papers' review instructions against the plain one, one review round,
# greedy, seed 0. NQ-open (first 100 test questions, at most 64 new tokens): the plain `review`, arXiv 2406.02378's
# `review-confident` and STaSC's `stasc_correction` (configs/stasc/prompts_nq.yaml, arXiv 2503.08681). BBQ Age (first
# 100, option confidence on): the plain `review`, `review-confident` (the same text as arXiv 2406.02378's
# `bbq-review`) and `bbq-review-unbiased` (its social-bias variant).
# `python experiments/real_model/table.py $OUT/*` prints the tables of docs/real-model.md.
# Usage: bash experiments/real_model/review_prompts.sh OUT
set -euo pipefail
OUT=${1:?usage: review_prompts.sh OUT}
SC="${SELFCORRECT:-selfcorrect}"

run() {  # name, then eval flags; skips a finished run, resumes an interrupted one
  local name=$1; shift
  if [ -f "$OUT/$name/summary.json" ]; then return; fi
  local resume=(); [ -d "$OUT/$name" ] && resume=(--resume)
  $SC eval --model smollm2-135m-instruct --rounds 1 --temperature 0 --seed 0 --quiet --out "$OUT/$name" \
    "${resume[@]}" "$@"
}

for prompt in review review-confident; do
  run nq-$prompt --task nq-open --limit 100 --set max_new_tokens=64 --review-prompt $prompt
done
run nq-stasc_correction --task nq-open --limit 100 --set max_new_tokens=64 --review-prompt stasc_correction \
  --set prompts_file=configs/stasc/prompts_nq.yaml
for prompt in review review-confident bbq-review-unbiased; do
  run bbq-$prompt --task bbq --limit 100 --question-prompt bbq-question --set max_new_tokens=64 --review-prompt $prompt
done
