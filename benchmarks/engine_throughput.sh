#!/usr/bin/env bash
# Decode throughput of the engine (mor bench): MoR expert-choice with N_r = 2, 3, 4 (middle-cycle,
# 2 shared layers per recursion) against a vanilla model of the same unrolled depth and widths, at
# a fixed batch and at the largest batch the K/V pool holds. Models have their initial weights
# (speed and memory do not depend on the values; the routing mix does, and is printed).
# Usage: benchmarks/engine_throughput.sh MOR_BINARY REPO [OUT.md]
#   env: BATCH (8), PROMPT (64), GEN (64), KV_MB (64), HIDDEN (256)
set -euo pipefail
mor="$1"; repo="$2"; out="${3:-/dev/stdout}"
batch="${BATCH:-8}"; prompt="${PROMPT:-64}"; gen="${GEN:-64}"; kv="${KV_MB:-64}"; hidden="${HIDDEN:-256}"
tok="$repo/tests/fixtures/tokenizer/mor-trained/bytelevel.json"
{
  echo "# Engine decode throughput (CPU), MoR vs vanilla of the same unrolled depth"
  echo
  echo "\`BATCH=$batch PROMPT=$prompt GEN=$gen KV_MB=$kv HIDDEN=$hidden benchmarks/engine_throughput.sh build/mor .\` on $(nproc) CPU cores, $(date -u +%Y-%m-%d)."
  echo "Initial weights; expert-choice routing with the default capacities (recursion 0 keeps every token, later ones"
  echo "decide by the router threshold). Prompt $prompt tokens, $gen generated per request, K/V pool $kv MiB."
  echo
  for nr in 2 3 4; do
    layers=$((2 + 2 * nr))
    for b in "$batch" max; do
      echo "## N_r = $nr ($layers unrolled layers), batch $b"
      echo
      "$mor" bench "$repo/configs/model/tiny-mor-ec.yaml" --tokenizer "$tok" --batch "$b" --prompt-len "$prompt" \
        --gen-len "$gen" --set model.vocab_size=640 --set "model.hidden_size=$hidden" \
        --set "model.intermediate_size=$((hidden * 11 / 4))" --set model.num_heads=4 --set model.num_kv_heads=2 \
        --set "model.num_layers=$layers" --set "model.recursion.num_recursions=$nr" \
        --set model.max_seq_len=$((prompt + gen)) --set "engine.kv_memory_mb=$kv" 2>/dev/null
      echo
    done
  done
} >"$out"
