#!/usr/bin/env bash
# tools/plot_metrics.py on two fake runs: a resumed run (a repeated step: the last occurrence wins),
# an event line that is ignored and a truncated last line that is skipped with a warning; --csv gives
# the merged table, --out a PNG (checked only when matplotlib is importable); a bad line in the
# middle of a file and a missing input are one line on stderr with exit code 1.
# Usage: plot_metrics_test.sh PYTHON REPO_ROOT
set -euo pipefail
py="$1"; repo="$2"
script="$repo/tools/plot_metrics.py"
tmp="$(mktemp -d)"; trap 'rm -rf "$tmp"' EXIT
# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
# lib.sh's `check` expects failing commands to be survivable: run it outside errexit.
expect() { check "$@" || true; }
fail() { echo "FAIL $1"; failed=$((failed+1)); }
pass() { echo "ok   $1"; passed=$((passed+1)); }

# Run "alpha": steps 1..4, a checkpoint event, then a resume from step 2 that rewrites steps 3 and 4,
# then a line truncated by a kill.
mkdir -p "$tmp/runs/alpha" "$tmp/runs/beta"
train() {  # train STEP LM_LOSS [EXTRA_JSON]
  printf '{"kind":"train","step":%d,"tokens":%d,"flops":%d.0,"time_s":%d.5,"loss":%s,"lm_loss":%s,"aux_loss":0.01,"grad_norm":1.5,"lr":0.001,"tokens_per_s":1000.0,"mfu":null,"mem_mb":512.0%s}\n' \
    "$1" "$(($1 * 256))" "$(($1 * 1000000))" "$1" "$2" "$2" "${3:-}"
}
{
  train 1 5.0 ',"router_accuracy":0.5,"depth_hist":[0.5,0.3,0.2],"balance_entropy":1.0,"skipped":0'
  train 2 4.5 ',"router_accuracy":0.6,"depth_hist":[0.4,0.4,0.2],"balance_entropy":1.0,"skipped":0'
  printf '{"kind":"val","step":2,"tokens":512,"val_loss":4.8,"val_ppl":121.5,"depth_hist":[0.4,0.4,0.2]}\n'
  printf '{"kind":"event","step":2,"event":"checkpoint","path":"ckpt/step_2"}\n'
  train 3 4.0 ',"router_accuracy":0.7,"depth_hist":[0.3,0.4,0.3],"balance_entropy":1.0,"skipped":0'
  train 4 3.9 ',"router_accuracy":0.7,"depth_hist":[0.3,0.4,0.3],"balance_entropy":1.0,"skipped":0'
  printf '{"kind":"event","step":2,"event":"resume","path":"ckpt/step_2"}\n'
  train 3 4.25 ',"router_accuracy":0.7,"depth_hist":[0.3,0.4,0.3],"balance_entropy":1.0,"skipped":0'
  train 4 3.75 ',"router_accuracy":0.8,"depth_hist":[0.2,0.4,0.4],"balance_entropy":1.0,"skipped":1'
  printf '{"kind":"val","step":4,"tokens":1024,"val_loss":4.1,"val_ppl":60.3,"depth_hist":[0.2,0.4,0.4]}\n'
  printf '{"kind":"train","step":5,"tokens":1280,"flo'
} >"$tmp/runs/alpha/metrics.jsonl"
# Run "beta": no routing fields, given as a file rather than a directory.
{
  train 1 6.0; train 2 5.5; train 3 5.0
  printf '{"kind":"val","step":3,"tokens":768,"val_loss":5.2,"val_ppl":181.3}\n'
} >"$tmp/runs/beta/metrics.jsonl"

# CSV: needs no matplotlib.
expect "csv of two runs, truncated last line skipped with a warning" 0 \
  "warning: .*alpha/metrics.jsonl:11: skipping" -- \
  "$py" "$script" "$tmp/runs/alpha" "$tmp/runs/beta/metrics.jsonl" --csv "$tmp/table.csv"
if [ -f "$tmp/table.csv" ]; then
  header="$(head -1 "$tmp/table.csv")"
  want_header="run,kind,step,tokens,flops,time_s,loss,lm_loss,aux_loss,grad_norm,lr,tokens_per_s,mfu,mem_mb,router_accuracy,balance_entropy,skipped,val_loss,val_ppl,depth_1,depth_2,depth_3"
  rows() { grep -c "$1" "$tmp/table.csv" || true; }  # rows REGEX: how many CSV lines match
  has() {  # has NAME REGEX: exactly one CSV line matches
    if [ "$(rows "$2")" -eq 1 ]; then pass "$1"; else fail "$1: no single line /$2/ in:"; cat "$tmp/table.csv"; fi
  }
  header="$(head -1 "$tmp/table.csv")"
  want_header="run,kind,step,tokens,flops,time_s,loss,lm_loss,aux_loss,grad_norm,lr,tokens_per_s,mfu,mem_mb,router_accuracy,balance_entropy,skipped,val_loss,val_ppl,depth_1,depth_2,depth_3"
  if [ "$header" = "$want_header" ]; then pass "csv header"; else fail "csv header is: $header"; fi
  lines="$(wc -l <"$tmp/table.csv")"
  if [ "$lines" -eq $((1 + 4 + 2 + 3 + 1)) ]; then pass "csv row count (each step once, no event rows)";
  else fail "csv has $lines lines, expected 11"; fi
  has "repeated step kept once, with the last value" '^alpha,train,3,768,3000000.0,3.5,4.25,4.25,'
  if [ "$(rows '^alpha,train,3,')" -eq 1 ]; then pass "no other row for the repeated step";
  else fail "alpha train step 3 appears $(rows '^alpha,train,3,') times"; fi
  has "routing fields and depth_hist columns" '^alpha,train,4,.*,0.8,1.0,1,,,0.2,0.4,0.4$'
  has "val row" '^alpha,val,4,1024,,,,,,,,,,,,,,4.1,60.3,0.2,0.4,0.4$'
  has "file input labelled with its directory name, absent fields empty" \
    '^beta,train,2,512,2000000.0,2.5,5.5,5.5,0.01,1.5,0.001,1000.0,,512.0,,,,,,,,$'
  if [ "$(rows '^alpha,train,5,')" -eq 0 ]; then pass "truncated record not in the table";
  else fail "truncated record in the table"; fi
else
  fail "no CSV written"
fi

# Errors: one line on stderr, exit code 1.
{ train 1 5.0; printf '{"kind":"train","step":2,"lm_loss":\n'; train 3 4.0; } >"$tmp/bad.jsonl"
expect "bad line in the middle names file:line" 1 "^plot_metrics: error: .*bad.jsonl:2: invalid JSON" -- \
  "$py" "$script" "$tmp/bad.jsonl" --csv "$tmp/bad.csv"
expect "missing input" 1 "^plot_metrics: error: .*absent/metrics.jsonl" -- \
  "$py" "$script" "$tmp/runs/alpha" "$tmp/absent/metrics.jsonl" --csv "$tmp/missing.csv"
mkdir -p "$tmp/empty_run"
expect "run directory without metrics.jsonl" 1 "^plot_metrics: error: no metrics.jsonl in run directory .*empty_run" -- \
  "$py" "$script" "$tmp/empty_run" --csv "$tmp/missing.csv"
expect "no output requested" 1 "^plot_metrics: error: nothing to do" -- "$py" "$script" "$tmp/runs/alpha"

# PNG: only when the interpreter has matplotlib.
if "$py" -c 'import matplotlib' 2>/dev/null; then
  png_ok() {  # png_ok NAME FILE
    if [ -s "$2" ] && [ "$(head -c 4 "$2" | od -An -tx1 | tr -d ' \n')" = "89504e47" ]; then pass "$1";
    else fail "$1: $2 is missing or not a PNG"; fi
  }
  expect "plot two runs (defaults)" 0 "" -- \
    "$py" "$script" "$tmp/runs/alpha" "$tmp/runs/beta/metrics.jsonl" --out "$tmp/plot.png"
  png_ok "default plot is a PNG" "$tmp/plot.png"
  expect "plot over flops, chosen metrics, log y, title, csv too" 0 "" -- \
    "$py" "$script" "$tmp/runs/alpha" "$tmp/runs/beta" --out "$tmp/flops.png" --x flops \
    --metrics loss,val_ppl,router_accuracy,depth_hist --log-y --title "two runs" --csv "$tmp/both.csv"
  png_ok "flops plot is a PNG" "$tmp/flops.png"
  if cmp -s "$tmp/table.csv" "$tmp/both.csv"; then pass "same csv when plotting"; else fail "csv differs when plotting"; fi
  expect "unknown metric" 1 "^plot_metrics: error: no run records the metric 'nope'" -- \
    "$py" "$script" "$tmp/runs/beta" --out "$tmp/nope.png" --metrics loss,nope --csv "$tmp/nope.csv"
  if [ ! -e "$tmp/nope.png" ] && [ ! -e "$tmp/nope.csv" ]; then pass "no output after an error";
  else fail "a failed run wrote output"; fi
else
  echo "matplotlib missing: PNG checks skipped"
  expect "plot without matplotlib" 1 "^plot_metrics: matplotlib is not installed; run: .*/bin/pip install matplotlib" -- \
    "$py" "$script" "$tmp/runs/alpha" --out "$tmp/plot.png"
fi

echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
