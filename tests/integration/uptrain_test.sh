#!/usr/bin/env bash
# Uptraining end to end: a vanilla tiny model trained briefly, exported, turned into the demo's
# MoR (middle_cycle, N_r=2) by `mor uptrain` with each strategy, then trained from that bundle with
# train.init_from; it starts from a lower loss than a fresh initialisation.
# Usage: uptrain_test.sh MOR_BINARY SOURCE_DIR [PYTHON]
set -uo pipefail
mor="$1"; src="$2"; py="${3:-python3}"
tmp="$(mktemp -d)"; trap 'rm -rf "$tmp"' EXIT
# shellcheck source=tests/integration/lib.sh
source "$src/tests/integration/lib.sh"
export OMP_NUM_THREADS=1

prepare_corpus "$src/docs" "$src/README.md"
common=("${corpus_args[@]}" --set train.seq_len=64 --set train.micro_batch_size=4 --set train.global_batch_size=4
        --set train.warmup_steps=2 --set train.log_interval=1 --set train.eval_interval=0 --set train.eval_batches=1)
first_loss() { "$py" -c '
import json, sys
for line in open(sys.argv[1]):
    r = json.loads(line)
    if r["kind"] == "train": print(r["lm_loss"]); break' "$tmp/$1/metrics.jsonl"; }

check "train a vanilla base" 0 "done: 30 steps" -- "$mor" train "$src/configs/demo.yaml" "$src/configs/model/tiny-vanilla.yaml" \
  "${common[@]}" --set train.max_steps=30 --set "train.out_dir=$tmp/base"
check "export it" 0 "" -- "$mor" export "$tmp/base" --out "$tmp/base-bundle"
for strategy in stepwise lower upper random average; do
  check "uptrain ($strategy)" 0 "parameter set 1 <- source layer" -- "$mor" uptrain "$tmp/base-bundle" \
    --config "$src/configs/demo.yaml" --set model.vocab_size=640 --strategy "$strategy" --seed 3 --out "$tmp/up-$strategy"
done
check "stepwise picks layers 1 and 4 of 6 for the two shared sets" 0 "parameter set 2 <- source layer 4" -- \
  "$mor" uptrain "$tmp/base-bundle" --config "$src/configs/demo.yaml" --set model.vocab_size=640 --out "$tmp/up-again"
check "train from the uptrained bundle" 0 "initialised from" -- "$mor" train "$src/configs/demo.yaml" "${common[@]}" \
  --set train.max_steps=2 --set "train.init_from=$tmp/up-stepwise" --set "train.out_dir=$tmp/warm"
check "train from scratch" 0 "done: 2 steps" -- "$mor" train "$src/configs/demo.yaml" "${common[@]}" \
  --set train.max_steps=2 --set "train.out_dir=$tmp/cold"
check "the uptrained model starts lower" 0 "^lower$" -- "$py" -c '
import sys; w, c = float(sys.argv[1]), float(sys.argv[2]); print("lower" if w < c - 0.2 else "warm %s cold %s" % (w, c))' \
  "$(first_loss warm)" "$(first_loss cold)"
check "init_from with another model is refused" 1 "train.init_from: .* different model.*num_layers" -- \
  "$mor" train "$src/configs/demo.yaml" "${common[@]}" --set train.max_steps=2 --set model.num_layers=8 \
  --set "train.init_from=$tmp/up-stepwise" --set "train.out_dir=$tmp/bad"
check "uptrain refuses a non-vanilla source" 1 "source model must be vanilla" -- "$mor" uptrain "$tmp/up-stepwise" \
  --config "$src/configs/demo.yaml" --set model.vocab_size=640 --out "$tmp/up-bad"
echo "uptrain_test: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
