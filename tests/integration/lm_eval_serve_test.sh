#!/usr/bin/env bash
# lm-evaluation-harness scores a MoR model through `mor serve` (its local-completions model: OpenAI
# completions with echo + logprobs) exactly as `mor eval` scores the same bundle: every request's
# log-likelihood within 1e-4, identical acc / acc_norm, perplexity to 1e-5 (tools/lm_eval_serve_check.py).
# Skipped (exit 0, with a message) when PYTHON cannot import lm_eval with its API extra.
# Usage: lm_eval_serve_test.sh MOR_BINARY SOURCE_DIR PYTHON
set -uo pipefail
mor="$1"; src="$2"; py="${3:-python3}"
if ! "$py" -c 'import lm_eval, tenacity, aiohttp, transformers' 2>/dev/null; then
  echo "lm_eval[api] not installed: skipped (tools/setup.sh installs lm-eval[hf,api] into the virtualenv)"
  exit 0
fi
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
# shellcheck source=tests/integration/lib.sh
source "$src/tests/integration/lib.sh"
export OMP_NUM_THREADS=1

prepare_corpus "$src/docs"
check "train a tiny MoR" 0 "done: 10 steps" -- \
  "$mor" train "$src/configs/model/tiny-mor-ec.yaml" "${corpus_args[@]}" --set train.seq_len=64 \
  --set train.micro_batch_size=4 --set train.global_batch_size=4 --set train.max_steps=10 --set train.warmup_steps=2 \
  --set train.eval_interval=0 --set train.eval_batches=1 --set model.max_seq_len=512 --set "train.out_dir=$tmp/run"
check "export" 0 "exported" -- "$mor" export "$tmp/run" --out "$tmp/b"
check "lm_eval through mor serve equals mor eval (2 shots)" 0 "lm_eval_serve_check: ok" -- \
  "$py" "$src/tools/lm_eval_serve_check.py" --mor "$mor" --model "$tmp/b" --data-dir "$src/tests/fixtures/eval/data" \
  --tasks piqa,arc_easy,lambada_openai,winogrande,hellaswag --num-fewshot 2 --out "$tmp/work"
grep -h "^served" "$tmp/out"
echo "lm_eval_serve_test: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
