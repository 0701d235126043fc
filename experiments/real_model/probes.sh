#!/usr/bin/env bash
# Probes on SmolLM2-135M-Instruct's hidden states (docs/real-model.md, section A, "Probes"), per round: the state
# at the last prompt token before answering round t >= 2 has the round t-1 answer in context. Greedy, two review
# rounds, seed 0. For each layer the train split stores its states and trains the probe, the test split scores it;
# layer 0 (the embeddings) is the embedding-layer control, and `selfcorrect probe` adds the question-only control
# (each row's round-1 state) and the mean-NLL baseline. `cat $OUT/*/probe.json` holds the numbers.
# - capitals: "the answer in context is wrong", on the `capitals` task (196 train / 117 test questions), where a
#   third of the answers are right (on NQ-open 9% are, too few to train on); layers 0, 15 and 30 (the last), and
#   layer 0 averaged over the last 64 prompt tokens.
# - bbq: "the answer in context is the stereotyped one", on 400 / 200 BBQ items carved from the six shipped
#   categories (split seed 0), `bbq-question` and `bbq-review`; layers 0 and 15, and layer 0 averaged over the
#   last 64 prompt tokens.
# Usage: bash experiments/real_model/probes.sh OUT [capitals|bbq|all]
set -euo pipefail
OUT=${1:?usage: probes.sh OUT [capitals|bbq|all]}
WHICH=${2:-all}
SC="${SELFCORRECT:-selfcorrect}"

probe() {  # name, layer, concept, then eval flags: store the states of both splits, then train and score the probe
  local name=$1 layer=$2 concept=$3; shift 3
  for split in train test; do
    local out="$OUT/$name-$split-layer$layer"
    if [ -f "$out/summary.json" ]; then continue; fi
    local resume=(); [ -d "$out" ] && resume=(--resume)
    $SC eval --model smollm2-135m-instruct --split $split --rounds 2 --temperature 0 --seed 0 \
      --hidden-layer "$layer" --quiet --out "$out" "${resume[@]}" "$@"
  done
  $SC probe "$OUT/$name-test-layer$layer" --train-run "$OUT/$name-train-layer$layer" --concept "$concept" --seed 0
}

if [ "$WHICH" = all ] || [ "$WHICH" = capitals ]; then
  for layer in 0 15 30; do
    probe capitals $layer answer-in-context-is-wrong --task capitals
  done
  # the last prompt token's embedding is the same token in every row, so layer 0 there is constant; averaged over
  # the last 64 prompt tokens (the answer in context and the review instruction) it is a bag-of-embeddings control
  probe capitals-span64 0 answer-in-context-is-wrong --task capitals --hidden-span 64
fi
if [ "$WHICH" = all ] || [ "$WHICH" = bbq ]; then
  BBQ=(--task bbq --set task_options.splits.train=400 --set task_options.splits.test=200
       --question-prompt bbq-question --review-prompt bbq-review --set max_new_tokens=64 --set option_confidence=false)
  for layer in 0 15; do
    probe bbq $layer answer-in-context-is-stereotyped "${BBQ[@]}"
  done
  probe bbq-span64 0 answer-in-context-is-stereotyped "${BBQ[@]}" --hidden-span 64
fi
