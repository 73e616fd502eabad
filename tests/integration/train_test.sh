#!/usr/bin/env bash
# End-to-end `mor train`: a tiny MoR on a corpus prepared from the repository's docs. Proves exact
# resume after SIGKILL (same losses bit for bit), --nproc 2 equivalence, a failing rank stopping
# the run, SIGTERM -> checkpoint + exit 75, a save killed mid-write, and one-line config errors.
# Usage: train_test.sh MOR_BINARY SOURCE_DIR [PYTHON]
set -uo pipefail
mor="$1"; src="$2"; py="${3:-python3}"
tmp="$(mktemp -d)"; pid=""
trap '[ -n "$pid" ] && kill -9 "$pid" 2>/dev/null; rm -rf "$tmp"' EXIT
# shellcheck source=tests/integration/lib.sh
source "$src/tests/integration/lib.sh"
export OMP_NUM_THREADS=1

prepare_corpus "$src/docs" "$src/README.md"
base=("${corpus_args[@]}" --set train.seq_len=64 --set train.micro_batch_size=2 --set train.global_batch_size=4
      --set train.max_steps=12 --set train.warmup_steps=2 --set train.log_interval=1 --set train.eval_interval=0
      --set train.eval_batches=2 --set train.save_interval=6 --set train.keep_checkpoints=0)
run() { local dir="$1"; shift; "$mor" train "$src/configs/demo.yaml" "${base[@]}" --set "train.out_dir=$tmp/$dir" "$@"; }

# lm_loss per step (the last line of each step wins: a resumed run rewrites the steps it redid).
losses() { "$py" -c '
import json, sys
d = {}
for line in open(sys.argv[1]):
    r = json.loads(line)
    if r["kind"] == "train": d[r["step"]] = r["lm_loss"]
print(" ".join(repr(d[k]) for k in sorted(d)))' "$tmp/$1/metrics.jsonl"; }

check "train 12 steps" 0 "done: 12 steps" -- run full
check "loss falls" 0 "falls" -- "$py" -c '
import sys; l = [float(x) for x in sys.argv[1].split()]; print("falls" if l[-1] < l[0] - 0.3 else "flat %s" % l)' "$(losses full)"

MOR_FAULT_KILL_AFTER_STEP=9 run cut >/dev/null 2>&1; rc=$?
check "SIGKILL after step 9 (rc $rc) leaves the step-6 checkpoint" 0 "step-00000006" -- ls "$tmp/cut/checkpoints"
check "resume continues from step 6" 0 "resumed from .*step-00000006 at step 6" -- run cut
check "resumed losses equal the uninterrupted run bit for bit" 0 "^same$" -- \
  "$py" -c 'import sys; print("same" if sys.argv[1] == sys.argv[2] else sys.argv[1] + "\n" + sys.argv[2])' \
  "$(losses full)" "$(losses cut)"

check "--nproc 2 (zero3)" 0 "done: 12 steps" -- run two --nproc 2 --set train.sharding=zero3
check "2 ranks match 1 rank" 0 "^close$" -- "$py" -c '
import sys; a = [float(x) for x in sys.argv[1].split()]; b = [float(x) for x in sys.argv[2].split()]
print("close" if len(a) == len(b) and all(abs(x - y) <= 1e-4 * abs(y) for x, y in zip(a, b)) else (a, b))' \
  "$(losses two)" "$(losses full)"

check "a killed rank stops the others" 1 "rank 1 was killed by signal 9; stopping the other 1 rank" -- \
  env MOR_FAULT_KILL_AFTER_STEP=1:3 "$mor" train "$src/configs/demo.yaml" "${base[@]}" --set "train.out_dir=$tmp/dead" --nproc 2

MOR_FAULT_KILL_IN_SAVE=12 run torn >/dev/null 2>&1
check "a save killed before its commit keeps the previous checkpoint" 0 "resumed from .*step-00000006" -- run torn

"$mor" train "$src/configs/demo.yaml" "${base[@]}" --set "train.out_dir=$tmp/term" --set train.max_steps=100000 \
  --set train.save_interval=0 >"$tmp/term.out" 2>&1 &
pid=$!
for _ in $(seq 1 300); do grep -q '"kind":"train"' "$tmp/term/metrics.jsonl" 2>/dev/null && break; sleep 0.1; done
kill -TERM "$pid"; wait "$pid"; rc=$?; pid=""
check "SIGTERM saves a checkpoint and exits 75 (rc $rc)" 0 "^75 .*checkpoint saved" -- \
  bash -c "echo $rc \$(grep 'stopped by a signal' '$tmp/term.out')"

# Ctrl-C on a terminal signals the launcher's whole process group: ranks must still checkpoint.
setsid "$mor" train "$src/configs/demo.yaml" "${base[@]}" --set "train.out_dir=$tmp/int" --set train.max_steps=100000 \
  --set train.save_interval=0 --nproc 2 >"$tmp/int.out" 2>&1 &
pid=$!
for _ in $(seq 1 600); do grep -q '"kind":"train"' "$tmp/int/metrics.jsonl" 2>/dev/null && break; sleep 0.1; done
kill -INT -- "-$pid"; wait "$pid"; rc=$?; pid=""
check "SIGINT to the launcher's process group: checkpoint, exit 75 (rc $rc)" 0 "^75 .*checkpoint saved" -- \
  bash -c "echo $rc \$(grep 'stopped by a signal' '$tmp/int.out')"

check "global batch not divisible over ranks" 1 "train.global_batch_size \(4\) must be a multiple of train.micro_batch_size x ranks \(2 x 3\)" -- \
  run bad --nproc 3
check "missing shards name the pattern" 1 "nothing/train_\*.bin" -- \
  run bad2 --set "data.train_shards=$tmp/nothing/train_*.bin"
check "no budget" 1 "no budget" -- run bad3 --set train.max_steps=0
check "resuming with another model is refused" 1 "model configuration differs.*intermediate_size 176 \(checkpoint\) vs 180 \(config\)" -- \
  run full --set model.intermediate_size=180 --set train.max_steps=14

if "$py" -c 'import matplotlib' 2>/dev/null; then
  check "plot metrics" 0 "" -- "$py" "$src/tools/plot_metrics.py" "$tmp/full" "$tmp/two" --out "$tmp/plot.png"
  check "plot is a PNG" 0 "89504e47" -- bash -c "head -c4 '$tmp/plot.png' | od -An -tx1 | tr -d ' \n'"
fi

echo "train_test: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
