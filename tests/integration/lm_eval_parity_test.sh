#!/usr/bin/env bash
# `mor eval` -> the same requests, log-likelihoods and scores as lm-evaluation-harness. A tiny vanilla
# model is trained for 30 steps (seq_len 128) on the repository's docs and exported; then
# tools/lm_eval_parity.py runs `mor eval` and lm_eval's simple_evaluate (model "hf", float32, CPU,
# add_bos_token False, fewshot seed 1234) on the hand-written fixtures in tests/fixtures/eval/data
# and compares them request by request (|ll difference| <= 1e-4), document by document and task by
# task: all 11 tasks (lambada_openai, hellaswag, piqa, winogrande, arc_easy, arc_challenge,
# openbookqa, mmlu_{abstract_algebra,marketing,philosophy,sociology}) at 0 shots, then 3 shots
# (mmlu: 5 shots; these contexts exceed the model's 256 positions, so left truncation is compared
# too). lm_eval's own requests are also checked against the goldens in tests/fixtures/eval/requests.
# Skipped (exit 0, with a message) when the Python given cannot import lm_eval.
# Usage: lm_eval_parity_test.sh MOR_BINARY SOURCE_DIR [PYTHON]
set -uo pipefail
mor="$1"; src="$2"; py="${3:-python3}"
if ! "$py" -c 'import lm_eval, transformers, torch' 2>/dev/null; then
  echo "lm_eval not installed: skipped (install lm-eval[hf] into the virtualenv to run this test)"
  exit 0
fi
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
# shellcheck source=tests/integration/lib.sh
source "$src/tests/integration/lib.sh"
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-2}"
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TRANSFORMERS_OFFLINE=1
export HF_HOME="$tmp/hf_home" HF_DATASETS_CACHE="$tmp/hf_datasets"

prepare_corpus "$src/docs"
check "train vanilla" 0 "done: 30 steps" -- \
  "$mor" train "$src/configs/model/tiny-vanilla.yaml" "${corpus_args[@]}" \
  --set train.seq_len=128 --set train.micro_batch_size=2 --set train.global_batch_size=2 \
  --set train.max_steps=30 --set train.warmup_steps=2 --set train.eval_interval=0 --set train.eval_batches=1 \
  --set "train.out_dir=$tmp/run"
check "export" 0 "exported" -- "$mor" export "$tmp/run" --out "$tmp/bundle"

data="$src/tests/fixtures/eval/data"
golden="$src/tests/fixtures/eval/requests"
parity() {  # parity NAME TASKS SHOTS
  local before="$failed"
  check "mor eval matches lm_eval: $1" 0 "lm_eval_parity: ok" -- \
    "$py" "$src/tools/lm_eval_parity.py" --mor "$mor" --model "$tmp/bundle" --data-dir "$data" \
    --tasks "$2" --num-fewshot "$3" --batch-size 3 --golden "$golden" --out "$tmp/parity-$3" --tol 1e-4
  if [ "$failed" -eq "$before" ]; then
    grep -hE "^(parity |near-tie)" "$tmp/out" 2>/dev/null
  else  # check showed the first lines; show the mismatches
    grep -hE "^(lm_eval_parity: FAIL|  )" "$tmp/out" 2>/dev/null | head -40
  fi
}
all7="lambada_openai,hellaswag,piqa,winogrande,arc_easy,arc_challenge,openbookqa"
parity "all tasks, 0 shots" "$all7,mmlu" 0
parity "3 shots" "$all7" 3
parity "mmlu, 5 shots" "mmlu" 5

echo "lm_eval_parity_test: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
