#!/usr/bin/env bash
# Export -> Hugging Face transformers -> same logits. Two tiny vanilla models (tied and untied
# embeddings, GQA, a non-default RoPE theta, init std 0.2 so that logits are far from uniform:
# max |logit| ~6, and a wrong RoPE theta alone moves them by ~6) are trained for 2 steps on the
# repository's docs, exported with `mor export`, and run by transformers' LlamaForCausalLM (fp32,
# eager attention) on the token ids `mor model logits` used: max |difference| <= 1e-4
# (tools/hf_parity.py).
# Skipped (exit 0, with a message) when the Python given cannot import transformers.
# Usage: hf_parity_test.sh MOR_BINARY SOURCE_DIR [PYTHON]
set -uo pipefail
mor="$1"; src="$2"; py="${3:-python3}"
if ! "$py" -c 'import transformers, safetensors' 2>/dev/null; then
  echo "transformers not installed: skipped (tools/setup.sh installs it into the virtualenv)"
  exit 0
fi
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
# shellcheck source=tests/integration/lib.sh
source "$src/tests/integration/lib.sh"
export OMP_NUM_THREADS=1

prepare_corpus "$src/docs"
base=("${corpus_args[@]}" --set train.seq_len=64 --set train.micro_batch_size=2 --set train.global_batch_size=2
      --set train.max_steps=2 --set train.warmup_steps=1 --set train.eval_interval=0 --set train.eval_batches=1
      --set model.rope_theta=50000.0 --set model.init_std=0.2)
tokens="1,17,42,7,300,5,99,123,8,64,2,610,33,250,4,18,77,501,9,12,600,3,41,200"

for tied in true false; do
  out="$tmp/run-$tied"
  check "train vanilla (tie_embeddings $tied)" 0 "done: 2 steps" -- \
    "$mor" train "$src/configs/model/tiny-vanilla.yaml" "${base[@]}" --set "model.tie_embeddings=$tied" \
    --set "train.out_dir=$out"
  check "export (tie_embeddings $tied)" 0 "exported" -- "$mor" export "$out" --out "$tmp/b-$tied"
  check "mor logits (tie_embeddings $tied)" 0 "argmax:" -- \
    "$mor" model logits "$tmp/b-$tied" --tokens "$tokens" --out "$tmp/l-$tied.safetensors"
  check "transformers LlamaForCausalLM gives the same logits (tie_embeddings $tied)" 0 "hf_parity: ok max abs diff" -- \
    "$py" "$src/tools/hf_parity.py" "$tmp/b-$tied" "$tmp/l-$tied.safetensors" --tol 1e-4
  grep -h "hf_parity:" "$tmp/out" 2>/dev/null
done

echo "hf_parity_test: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
