#!/usr/bin/env bash
# End-to-end effect of the CUDA attention kernels: the same training run and the same engine decode
# benchmark with MOR_ATTENTION=aten (the ATen/SDPA path) and MOR_ATTENTION=auto (the kernels wherever
# they apply), bf16 on one CUDA GPU. Writes a Markdown table.
#
# Usage: benchmarks/kernels_e2e.sh MOR_BINARY REPO_ROOT [OUTPUT.md]
#
# Model: SmolLM-360M widths (hidden 960, ff 2560, 15 query heads / 5 KV heads: head dim 64) with LAYERS
# layers, MoR middle_cycle with N_r = NR (LAYERS - 2 must be a multiple of NR), from the 360M presets:
#   ec      expert-choice, recursion-wise KV caching   configs/model/mor-360m-ec-r3.yaml
#   share   expert-choice, recursive KV sharing         configs/model/mor-360m-ec-r3-kvshare.yaml
#   tc      token-choice, recursion-wise KV caching     configs/model/mor-360m-tc-r3.yaml
# Training: `mor train configs/demo.yaml <preset> --set ...` on the demo corpus (data/demo, its 512-token
# vocabulary) for STEPS optimizer steps on cuda, bf16, no sharding, global batch = micro batch (no
# accumulation). Step time = tokens per step / tokens_per_s, tokens_per_s averaged over the "train"
# lines of metrics.jsonl after the first log interval (warm-up). Both modes start from the same seed on
# the same data, so their final lm losses should agree to bf16 noise (a cheap correctness check).
# Decode: `mor bench <preset> --device cuda --dtype bfloat16 --vanilla none` (initial weights, the
# tokenizer fixture's 640-token vocabulary), BATCH requests of PROMPT random tokens generating GEN
# each; decode tokens/s from its JSON.
# speed-up = time with aten / time with auto (> 1: the kernels help).
#
# Environment (defaults in brackets): STEPS [20], LOG_INTERVAL [5], SEQ [2048], MICRO [8], LAYERS [8],
# NR [3], HIDDEN [960], FF [2560], HEADS [15], KV_HEADS [5], BATCH [64], PROMPT [512], GEN [128],
# KV_MB [8192], VARIANTS [ec share tc], PARTS [train decode], RUN_TIMEOUT [300] (seconds per run),
# KEEP_RUNS [0] (keep the temporary run directories), DEVICE [cuda], PRECISION [bf16] and DTYPE [bfloat16]
# (DEVICE=cpu PRECISION=fp32 DTYPE=float32 with tiny sizes smoke-tests the script itself; the kernels
# do not run there, so its numbers mean nothing). Needs python3 (reads the JSON).
# Budget (estimated, not measured): a few minutes on an H100 with the defaults (6 short training runs,
# 6 decode runs); tools/gpu_check.sh runs a smaller setting.
# Exit status 1 when a run failed (the table says which), 2 on bad usage.
set -uo pipefail

if [[ $# -lt 2 || $# -gt 3 ]]; then
  echo "usage: $0 MOR_BINARY REPO_ROOT [OUTPUT.md]" >&2
  exit 2
fi
MOR=$(realpath "$1")
ROOT=$(realpath "$2")
OUT_MD=${3:+$(realpath -m "$3")}
[[ -x "$MOR" ]] || { echo "error: $MOR is not an executable" >&2; exit 2; }
[[ -f "$ROOT/configs/demo.yaml" ]] || { echo "error: $ROOT/configs/demo.yaml not found (is $ROOT the repo root?)" >&2; exit 2; }
command -v python3 >/dev/null || { echo "error: python3 is required to read the JSON results" >&2; exit 2; }

STEPS=${STEPS:-20}
LOG_INTERVAL=${LOG_INTERVAL:-5}
SEQ=${SEQ:-2048}
MICRO=${MICRO:-8}
LAYERS=${LAYERS:-8}
NR=${NR:-3}
HIDDEN=${HIDDEN:-960}
FF=${FF:-2560}
HEADS=${HEADS:-15}
KV_HEADS=${KV_HEADS:-5}
BATCH=${BATCH:-64}
PROMPT=${PROMPT:-512}
GEN=${GEN:-128}
KV_MB=${KV_MB:-8192}
VARIANTS=${VARIANTS:-ec share tc}
PARTS=${PARTS:-train decode}
RUN_TIMEOUT=${RUN_TIMEOUT:-300}
KEEP_RUNS=${KEEP_RUNS:-0}
DEVICE=${DEVICE:-cuda}
PRECISION=${PRECISION:-bf16}
DTYPE=${DTYPE:-bfloat16}
MODES=(aten auto)
if (( STEPS < 2 * LOG_INTERVAL )); then
  echo "error: STEPS ($STEPS) must be at least 2 x LOG_INTERVAL ($LOG_INTERVAL): the first interval is warm-up" >&2
  exit 2
fi
if (( (LAYERS - 2) % NR != 0 || LAYERS <= 2 )); then
  echo "error: middle_cycle needs LAYERS - 2 ($((LAYERS - 2))) to be a positive multiple of NR ($NR)" >&2
  exit 2
fi

cd "$ROOT" || exit 2
WORK=$(mktemp -d "${TMPDIR:-/tmp}/mor-kernels-e2e.XXXXXX")
if [[ "$KEEP_RUNS" == 1 ]]; then
  echo "run directories kept in $WORK" >&2
else
  trap 'rm -rf "$WORK"' EXIT
fi

preset() {
  case "$1" in
    ec) echo configs/model/mor-360m-ec-r3.yaml ;;
    share) echo configs/model/mor-360m-ec-r3-kvshare.yaml ;;
    tc) echo configs/model/mor-360m-tc-r3.yaml ;;
    *) return 1 ;;
  esac
}
label() {
  case "$1" in
    ec) echo "MoR expert-choice, recursion-wise KV" ;;
    share) echo "MoR expert-choice, KV sharing" ;;
    tc) echo "MoR token-choice, recursion-wise KV" ;;
  esac
}

MODEL_SETS=(
  --set model.hidden_size="$HIDDEN" --set model.intermediate_size="$FF"
  --set model.num_heads="$HEADS" --set model.num_kv_heads="$KV_HEADS" --set model.head_dim=0
  --set model.num_layers="$LAYERS" --set model.recursion.num_recursions="$NR"
)

# Mean tokens/s after the warm-up interval, final lm loss, peak memory (MiB) of a metrics.jsonl.
read_metrics() {
  python3 - "$1" "$LOG_INTERVAL" <<'EOF'
import json, sys
path, warm = sys.argv[1], int(sys.argv[2])
rows = [json.loads(l) for l in open(path) if l.strip()]
train = [r for r in rows if r.get("kind") == "train"]
late = [r["tokens_per_s"] for r in train if r.get("step", 0) > warm]
tps = sum(late) / len(late) if late else 0.0
loss = train[-1]["lm_loss"] if train else float("nan")
mem = max((r.get("mem_mb", 0) for r in train), default=0)
print(f"{tps} {loss} {mem}")
EOF
}

declare -A RESULT NOTE
status=0
fail_cell() { tail -n 1 "$1" 2>/dev/null | sed 's/|/\//g' | cut -c1-120; }

# --- training ---------------------------------------------------------------------------------------
if [[ " $PARTS " == *" train "* ]]; then
  if ! compgen -G "$ROOT/data/demo/train_*.bin" >/dev/null || [[ ! -f "$ROOT/data/demo/tokenizer.json" ]]; then
    echo "[train] skipped: no demo shards in $ROOT/data/demo (run tools/demo_data.sh here and carry data/demo)" >&2
    NOTE[train]="skipped: no demo data in data/demo"
  else
    for v in $VARIANTS; do
      p=$(preset "$v") || { echo "unknown variant $v" >&2; exit 2; }
      for mode in "${MODES[@]}"; do
        dir="$WORK/train-$v-$mode"
        log="$WORK/train-$v-$mode.log"
        echo "[train $v, MOR_ATTENTION=$mode] $STEPS steps of $MICRO x $SEQ tokens" >&2
        if MOR_ATTENTION=$mode timeout "$RUN_TIMEOUT" "$MOR" train configs/demo.yaml "$p" "${MODEL_SETS[@]}" \
            --set model.vocab_size=512 --set model.max_seq_len="$SEQ" \
            --set train.seq_len="$SEQ" --set train.micro_batch_size="$MICRO" --set train.global_batch_size="$MICRO" \
            --set train.max_steps="$STEPS" --set train.max_tokens=0 --set train.max_flops=0 \
            --set train.log_interval="$LOG_INTERVAL" --set train.eval_interval=0 --set train.eval_batches=0 \
            --set train.save_interval=0 --set train.precision="$PRECISION" --set train.device="$DEVICE" \
            --set train.sharding=none --set train.out_dir="$dir" --no-resume >"$log" 2>&1 &&
           m=$(read_metrics "$dir/metrics.jsonl") && [[ "${m%% *}" != 0.0 ]]; then
          read -r tps loss mem <<<"$m"
          RESULT[train,$v,$mode]="$tps $loss $mem"
          echo "[train $v, $mode] $(awk -v t="$tps" 'BEGIN { printf "%.0f", t }') tokens/s, lm loss $loss" >&2
        else
          tail -n 5 "$log" >&2
          RESULT[train,$v,$mode]="failed: $(fail_cell "$log")"
          status=1
        fi
      done
    done
  fi
fi

# --- decode -----------------------------------------------------------------------------------------
tok="$ROOT/tests/fixtures/tokenizer/mor-trained/bytelevel.json"
if [[ " $PARTS " == *" decode "* ]]; then
  for v in $VARIANTS; do
    p=$(preset "$v") || { echo "unknown variant $v" >&2; exit 2; }
    for mode in "${MODES[@]}"; do
      js="$WORK/decode-$v-$mode.json"
      log="$WORK/decode-$v-$mode.log"
      echo "[decode $v, MOR_ATTENTION=$mode] batch $BATCH, prompt $PROMPT, generate $GEN" >&2
      if MOR_ATTENTION=$mode timeout "$RUN_TIMEOUT" "$MOR" bench "$p" --device "$DEVICE" --dtype "$DTYPE" --tokenizer "$tok" \
          --batch "$BATCH" --prompt-len "$PROMPT" --gen-len "$GEN" --vanilla none -o "$js" "${MODEL_SETS[@]}" \
          --set model.vocab_size=640 --set model.max_seq_len=$((PROMPT + GEN)) --set engine.kv_memory_mb="$KV_MB" \
          >"$log" 2>&1 &&
         tps=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["results"][0]["tokens_per_s"])' "$js"); then
        RESULT[decode,$v,$mode]="$tps"
        echo "[decode $v, $mode] $(awk -v t="$tps" 'BEGIN { printf "%.0f", t }') tokens/s" >&2
      else
        tail -n 5 "$log" >&2
        RESULT[decode,$v,$mode]="failed: $(fail_cell "$log")"
        status=1
      fi
    done
  done
fi

# --- table ------------------------------------------------------------------------------------------
num() { [[ "$1" =~ ^[0-9.eE+-]+$ ]]; }
table() {
  local gpu
  gpu=$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -n 1)
  [[ "$DEVICE" == cpu ]] && gpu="none (CPU run)"
  echo "# End to end: MOR_ATTENTION=aten vs auto (CUDA kernels), $DEVICE, $PRECISION / $DTYPE"
  echo
  echo "GPU: ${gpu:-unknown}; $(date -u +%Y-%m-%d). Model: hidden $HIDDEN, ff $FF, heads $HEADS / kv $KV_HEADS" \
       "(head dim $((HIDDEN / HEADS))), $LAYERS layers, middle_cycle N_r = $NR. Training: $STEPS steps of" \
       "$MICRO x $SEQ tokens (tokens/s averaged after step $LOG_INTERVAL), demo corpus, vocab 512." \
       "Decode: batch $BATCH, prompt $PROMPT, $GEN generated tokens per request, K/V pool $KV_MB MiB, vocab 640," \
       "initial weights. speed-up = aten time / auto time."
  echo
  if [[ " $PARTS " == *" train "* ]]; then
    echo "## Training step"
    echo
    if [[ -n "${NOTE[train]:-}" ]]; then
      echo "${NOTE[train]}"
      echo
    else
      echo "| variant | aten step ms | auto step ms | speed-up | aten tokens/s | auto tokens/s | lm loss aten / auto | peak MiB aten / auto |"
      echo "|---|---:|---:|---:|---:|---:|---|---|"
      local v a b
      for v in $VARIANTS; do
        a=${RESULT[train,$v,aten]:-missing}; b=${RESULT[train,$v,auto]:-missing}
        local ta la ma tb lb mb
        read -r ta la ma <<<"$a"; read -r tb lb mb <<<"$b"
        local cell_a="$a" cell_b="$b" sa="–" sb="–" sp="–"
        if num "$ta"; then sa=$(awk -v t="$ta" -v n=$((MICRO * SEQ)) 'BEGIN { printf "%.1f", n / t * 1000 }'); cell_a=$(awk -v t="$ta" 'BEGIN { printf "%.0f", t }'); fi
        if num "$tb"; then sb=$(awk -v t="$tb" -v n=$((MICRO * SEQ)) 'BEGIN { printf "%.1f", n / t * 1000 }'); cell_b=$(awk -v t="$tb" 'BEGIN { printf "%.0f", t }'); fi
        if num "$ta" && num "$tb"; then sp=$(awk -v a="$ta" -v b="$tb" 'BEGIN { printf "%.2fx", b / a }'); fi
        local lcell="–" mcell="–"
        if num "$ta" && num "$tb"; then
          lcell=$(awk -v a="$la" -v b="$lb" 'BEGIN { printf "%.4f / %.4f", a, b }')
          mcell=$(awk -v a="$ma" -v b="$mb" 'BEGIN { printf "%.0f / %.0f", a, b }')
        fi
        echo "| $(label "$v") | $sa | $sb | $sp | $cell_a | $cell_b | $lcell | $mcell |"
      done
      echo
    fi
  fi
  if [[ " $PARTS " == *" decode "* ]]; then
    echo "## Engine decode (mor bench)"
    echo
    echo "| variant | aten tokens/s | auto tokens/s | speed-up |"
    echo "|---|---:|---:|---:|"
    local v a b sp
    for v in $VARIANTS; do
      a=${RESULT[decode,$v,aten]:-missing}; b=${RESULT[decode,$v,auto]:-missing}; sp="–"
      if num "$a" && num "$b"; then sp=$(awk -v a="$a" -v b="$b" 'BEGIN { printf "%.2fx", b / a }'); fi
      num "$a" && a=$(awk -v t="$a" 'BEGIN { printf "%.1f", t }')
      num "$b" && b=$(awk -v t="$b" 'BEGIN { printf "%.1f", t }')
      echo "| $(label "$v") | $a | $b | $sp |"
    done
    echo
  fi
}

result=$(table)
echo "$result"
if [[ -n "$OUT_MD" ]]; then
  mkdir -p "$(dirname "$OUT_MD")"
  echo "$result" >"$OUT_MD"
  echo "wrote $OUT_MD" >&2
fi
exit $status
