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
