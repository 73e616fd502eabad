# Shared by the CLI integration scripts: `check NAME EXPECTED_RC PATTERN -- command...` runs the
# command, then checks its exit code, that stdout+stderr match PATTERN (grep -E), and that a failing
# command printed exactly one line on stderr. Needs $tmp; counts into $passed / $failed.
passed=0; failed=0

check() {
  local name="$1" want_rc="$2" pattern="$3"; shift 4
  "$@" >"$tmp/out" 2>"$tmp/err"; local rc=$?
  local text; text="$(cat "$tmp/out" "$tmp/err")"
  if [ "$rc" -ne "$want_rc" ]; then
    echo "FAIL $name: exit code $rc, expected $want_rc"; echo "$text" | head -20; failed=$((failed+1)); return
  fi
  if ! grep -qE -- "$pattern" <<<"$text"; then
    echo "FAIL $name: output lacks /$pattern/"; echo "$text" | head -20; failed=$((failed+1)); return
  fi
  if [ "$want_rc" -ne 0 ] && [ "$(wc -l <"$tmp/err")" -ne 1 ]; then
    echo "FAIL $name: a user error must be one line on stderr, got:"; cat "$tmp/err"; failed=$((failed+1)); return
  fi
  echo "ok   $name"; passed=$((passed+1))
}

# The training scripts' corpus: `prepare_corpus INPUT...` tokenizes the inputs with the checked-in
# 600-token fixture tokenizer into $tmp/data (10% validation) and sets `tok` and `corpus_args`, the
# --set flags that point a config at it (model.vocab_size 640 covers the tokenizer).
prepare_corpus() {
  tok="$src/tests/fixtures/tokenizer/mor-trained/bytelevel.json"
  "$mor" data prepare "$@" --tokenizer "$tok" --out "$tmp/data" --val-fraction 0.1 --threads 1 -q \
    >/dev/null 2>&1 || { echo "FAIL data prepare"; exit 1; }
  corpus_args=(--set model.vocab_size=640 --set "data.train_shards=$tmp/data/train_*.bin"
               --set "data.val_shards=$tmp/data/val_*.bin" --set "data.tokenizer=$tok")
}
