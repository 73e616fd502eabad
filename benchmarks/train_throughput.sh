#!/usr/bin/env bash
# CPU training-throughput benchmark: vanilla vs recursive vs MoR at the same unrolled depth.
#
# Usage: benchmarks/train_throughput.sh MOR_BINARY REPO_ROOT [OUTPUT.md]
#
# Every variant trains `mor train configs/demo.yaml configs/model/tiny-<variant>.yaml --set ...` on the
# demo corpus (data/demo) for STEPS optimizer steps with identical shapes (only the keys that define the
# variant differ), in a temporary run directory, and the Markdown table is read from each run's
# metrics.jsonl:
#   tokens/s     mean of the "train" lines after the first log interval (the first one is warm-up)
#   peak MiB     max mem_mb (peak RSS of rank 0 on CPU, includes the ~0.5 GiB of the libtorch process)
#   lm loss      lm_loss of the last train line
#   params, training FLOPs/token   from `mor model info` at context SEQ
# Ratios are against the reference row named in the "vs" column (the vanilla model of the same unrolled
# depth; the 1-rank run for the 2-rank row).
#
# Environment knobs (defaults in brackets): STEPS [30], LOG_INTERVAL [10], THREADS [2] (OpenMP threads of
# a 1-rank run; an N-rank run gets max(1, THREADS/N) per rank), REPEATS [1] (runs per variant, interleaved
# across variants; tokens/s is the best run's mean, since interference on a shared machine only slows runs
# down), HIDDEN [128], FF [352], HEADS [4], KV_HEADS [2], SEQ [256], MICRO [8], GLOBAL [16], KEEP_RUNS [0]
# (keep the temporary run directories), VARIANTS (space-separated ids to run; default all, see below).
#
# On a machine whose cores are busy with other work, THREADS equal to the core count can collapse
# throughput (OpenMP threads spin at barriers while their partner is descheduled): use THREADS=1, or
# OMP_WAIT_POLICY=PASSIVE, there. The whole default run takes about 3-5 minutes on 2 cores.
set -euo pipefail

if [[ $# -lt 2 || $# -gt 3 ]]; then
  echo "usage: $0 MOR_BINARY REPO_ROOT [OUTPUT.md]" >&2
  exit 2
fi
MOR=$(realpath "$1")
ROOT=$(realpath "$2")
OUT_MD=${3:+$(realpath -m "$3")}
[[ -x "$MOR" ]] || { echo "error: $MOR is not an executable" >&2; exit 2; }
[[ -f "$ROOT/configs/demo.yaml" ]] || { echo "error: $ROOT/configs/demo.yaml not found (is $ROOT the repo root?)" >&2; exit 2; }
command -v jq >/dev/null || { echo "error: jq is required to read metrics.jsonl" >&2; exit 2; }
compgen -G "$ROOT/data/demo/train_*.bin" >/dev/null ||
  { echo "error: no demo shards in $ROOT/data/demo (run tools/demo_data.sh)" >&2; exit 2; }

STEPS=${STEPS:-30}
LOG_INTERVAL=${LOG_INTERVAL:-10}
THREADS=${THREADS:-2}
REPEATS=${REPEATS:-1}
HIDDEN=${HIDDEN:-128}
FF=${FF:-352}
HEADS=${HEADS:-4}
KV_HEADS=${KV_HEADS:-2}
SEQ=${SEQ:-256}
MICRO=${MICRO:-8}
GLOBAL=${GLOBAL:-16}
KEEP_RUNS=${KEEP_RUNS:-0}
if (( STEPS < 2 * LOG_INTERVAL )); then
  echo "error: STEPS ($STEPS) must be at least 2 x LOG_INTERVAL ($LOG_INTERVAL): the first interval is warm-up" >&2
  exit 2
fi

cd "$ROOT"
WORK=$(mktemp -d "${TMPDIR:-/tmp}/mor-train-bench.XXXXXX")
if [[ "$KEEP_RUNS" == 1 ]]; then
  echo "run directories kept in $WORK" >&2
else
  trap 'rm -rf "$WORK"' EXIT
fi

# Shapes shared by every variant, and the run settings.
COMMON=(
  --set model.hidden_size="$HIDDEN" --set model.intermediate_size="$FF"
  --set model.num_heads="$HEADS" --set model.num_kv_heads="$KV_HEADS" --set model.head_dim=0
  --set model.max_seq_len="$SEQ" --set model.vocab_size=512
  --set train.seq_len="$SEQ" --set train.micro_batch_size="$MICRO" --set train.global_batch_size="$GLOBAL"
  --set train.max_steps="$STEPS" --set train.max_tokens=0 --set train.max_flops=0
  --set train.log_interval="$LOG_INTERVAL" --set train.eval_interval=0 --set train.eval_batches=0
  --set train.save_interval=0 --set train.precision=fp32
)

# id | label | reference id | model preset | extra --set overrides (space-separated) | ranks
VARIANT_TABLE=(
  "vanilla6|vanilla, L 6|vanilla6|tiny-vanilla||1"
  "rec2|recursive middle_cycle N_r=2, no router, L 6|vanilla6|tiny-recursive||1"
  "ec2|MoR expert-choice middle_cycle N_r=2, L 6|vanilla6|tiny-mor-ec||1"
  "tc2|MoR token-choice middle_cycle N_r=2, L 6|vanilla6|tiny-mor-tc||1"
  "ec3mc6|MoR expert-choice middle_cycle N_r=3, L 6|vanilla6|tiny-mor-ec|model.recursion.num_recursions=3|1"
  "ec3c6|MoR expert-choice cycle N_r=3, L 6|vanilla6|tiny-mor-ec|model.recursion.sharing=cycle model.recursion.num_recursions=3|1"
  "vanilla8|vanilla, L 8|vanilla8|tiny-vanilla|model.num_layers=8|1"
  "ec3mc8|MoR expert-choice middle_cycle N_r=3, L 8|vanilla8|tiny-mor-ec|model.recursion.num_recursions=3 model.num_layers=8|1"
  "ec2x2|MoR expert-choice middle_cycle N_r=2, L 6, 2 ranks zero3|ec2|tiny-mor-ec|train.sharding=zero3|2"
)
WANT=" ${VARIANTS:-} "

declare -A LABEL REF PARAMS TFLOPS_STR TFLOPS TPS MEM LOSS STATUS RANKS THR
ORDER=()

fmt_k() { awk -v x="$1" 'BEGIN { if (x >= 1e6) printf "%.2fM", x / 1e6; else if (x >= 1e3) printf "%.2fk", x / 1e3; else printf "%.0f", x }'; }

declare -A CFG_PRESET CFG_EXTRA BEST_TPS
for row in "${VARIANT_TABLE[@]}"; do
  IFS='|' read -r id label ref preset extra ranks <<<"$row"
  if [[ -n "${VARIANTS:-}" && "$WANT" != *" $id "* ]]; then continue; fi
  ORDER+=("$id")
  LABEL[$id]=$label
  REF[$id]=$ref
  RANKS[$id]=$ranks
  CFG_PRESET[$id]=$preset
  CFG_EXTRA[$id]=$extra
  thr=$(( THREADS / ranks )); (( thr >= 1 )) || thr=1
  THR[$id]=$thr
done

# The config files and overrides of variant $1, into the array VARIANT_ARGS.
variant_args() {
  local id=$1 kv
  VARIANT_ARGS=(configs/demo.yaml "configs/model/${CFG_PRESET[$id]}.yaml" "${COMMON[@]}")
  for kv in ${CFG_EXTRA[$id]}; do VARIANT_ARGS+=(--set "$kv"); done
  if (( ${RANKS[$id]} == 1 )); then VARIANT_ARGS+=(--set train.sharding=none); fi
}

# Accounting first: it also rejects layouts the layer split does not allow (e.g. middle_cycle N_r=3, L 6).
for id in "${ORDER[@]}"; do
  variant_args "$id"
  if ! info=$("$MOR" model info "${VARIANT_ARGS[@]}" 2>&1); then
    msg=$(tail -n 1 <<<"$info" | sed 's/^mor: error: //')
    echo "[$id] skipped: $msg" >&2
    STATUS[$id]="skipped: $(sed 's/^[^ ]*:[0-9]*: //; s/|/\\|/g' <<<"$msg")"
    continue
  fi
  PARAMS[$id]=$(awk '/^parameters/ { p = 1 } p && $1 == "total" { print $2; exit }' <<<"$info")
  TFLOPS_STR[$id]=$(awk '/training FLOPs\/token/ { print $3; exit }' <<<"$info")
  BEST_TPS[$id]=0
  MEM[$id]=0
done

# Repeats are interleaved (every variant once, then again) so that a slow phase of a shared machine
# does not hit all runs of one variant.
for ((rep = 1; rep <= REPEATS; ++rep)); do
  for id in "${ORDER[@]}"; do
    [[ -n "${STATUS[$id]:-}" ]] && continue
    variant_args "$id"
    ranks=${RANKS[$id]} thr=${THR[$id]}
    dir="$WORK/$id-$rep"
    launch=()
    if (( ranks > 1 )); then launch=(--nproc "$ranks"); fi
    echo "[$id] run $rep/$REPEATS: $ranks rank(s) x $thr thread(s)" >&2
    if ! OMP_NUM_THREADS=$thr MKL_NUM_THREADS=$thr "$MOR" train "${VARIANT_ARGS[@]}" \
        --set train.out_dir="$dir" "${launch[@]}" --no-resume >"$WORK/$id-$rep.log" 2>&1; then
      tail -n 5 "$WORK/$id-$rep.log" >&2
      STATUS[$id]="failed: $(tail -n 1 "$WORK/$id-$rep.log" | sed 's/|/\\|/g')"
      continue
    fi
    m="$dir/metrics.jsonl"
    tps=$(jq -s --argjson w "$LOG_INTERVAL" \
      '[.[] | select(.kind == "train" and .step > $w) | .tokens_per_s] | if length > 0 then add / length else 0 end' "$m")
    echo "[$id] run $rep: $(fmt_k "$tps") tokens/s" >&2
    BEST_TPS[$id]=$(awk -v a="${BEST_TPS[$id]}" -v b="$tps" 'BEGIN { print (b > a ? b : a) }')
    MEM[$id]=$(jq -s --argjson m "${MEM[$id]}" '[.[] | select(.kind == "train") | .mem_mb] + [$m] | max' "$m")
    if (( rep == 1 )); then
      LOSS[$id]=$(jq -s '[.[] | select(.kind == "train")] | last | .lm_loss' "$m")
      TFLOPS[$id]=$(jq -s '[.[] | select(.kind == "train")] | last | .flops / .tokens' "$m")
    fi
  done
done
for id in "${ORDER[@]}"; do
  [[ -n "${STATUS[$id]:-}" ]] && continue
  STATUS[$id]=ok
  TPS[$id]=${BEST_TPS[$id]}
done

# --- table -----------------------------------------------------------------------------------------
table() {
  echo "Settings: d $HIDDEN, ff $FF, heads $HEADS / kv $KV_HEADS, vocab 512, seq $SEQ, micro-batch $MICRO," \
       "global batch $GLOBAL ($(( GLOBAL * SEQ )) tokens/step), $STEPS steps, log interval $LOG_INTERVAL" \
       "(tokens/s averaged over steps $(( LOG_INTERVAL + 1 ))-$STEPS), fp32, $THREADS OpenMP thread(s) for a" \
       "1-rank run (max(1, $THREADS / ranks) per rank otherwise), best of $REPEATS run(s) per variant."
  echo
  echo "| variant | params | train FLOPs/token | tokens/s | achieved GFLOP/s | peak RSS MiB | final lm loss | vs | time/token vs ref | FLOPs/token vs ref | memory vs ref |"
  echo "|---|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|"
  for id in "${ORDER[@]}"; do
    local label=${LABEL[$id]}
    (( ${RANKS[$id]} > 1 )) && label+=" (${RANKS[$id]} ranks x ${THR[$id]} thread)"
    if [[ "${STATUS[$id]}" != ok ]]; then
      echo "| $label | – | – | – | – | – | – | – | ${STATUS[$id]} | | |"
      continue
    fi
    local ref=${REF[$id]} tr="–" fr="–" mr="–" vs="–"
    if [[ "${STATUS[$ref]:-}" == ok ]]; then
      vs=${LABEL[$ref]%%,*}
      [[ "$ref" == ec2 ]] && vs="1 rank"
      [[ "$ref" == vanilla8 ]] && vs="vanilla L 8"
      [[ "$ref" == vanilla6 ]] && vs="vanilla L 6"
      if [[ "$ref" == "$id" ]]; then
        tr="1.00"; fr="1.00"; mr="1.00"
      else
        tr=$(awk -v a="${TPS[$ref]}" -v b="${TPS[$id]}" 'BEGIN { printf "%.2f", a / b }')
        fr=$(awk -v a="${TFLOPS[$ref]}" -v b="${TFLOPS[$id]}" 'BEGIN { printf "%.2f", b / a }')
        mr=$(awk -v a="${MEM[$ref]}" -v b="${MEM[$id]}" 'BEGIN { printf "%.2f", b / a }')
      fi
    fi
    printf '| %s | %s | %s | %s | %s | %.0f | %.3f | %s | %s | %s | %s |\n' \
      "$label" "${PARAMS[$id]}" "${TFLOPS_STR[$id]}" "$(fmt_k "${TPS[$id]}")" \
      "$(awk -v t="${TPS[$id]}" -v f="${TFLOPS[$id]}" 'BEGIN { printf "%.2f", t * f / 1e9 }')" \
      "${MEM[$id]}" "${LOSS[$id]}" "$vs" "$tr" "$fr" "$mr"
  done
}

result=$(table)
echo "$result"
if [[ -n "$OUT_MD" ]]; then
  mkdir -p "$(dirname "$OUT_MD")"
  echo "$result" >"$OUT_MD"
  echo "wrote $OUT_MD" >&2
fi
