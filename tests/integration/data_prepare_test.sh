#!/usr/bin/env bash
# End-to-end `mor data prepare` / `mor data verify`: a small mixed corpus (text files, .jsonl,
# .jsonl.zst) becomes shards + manifest; the same command again gives identical bytes with another
# thread count; a bad JSON line is one line on stderr naming file:line with exit code 1 and leaves no
# manifest; --skip-bad counts it instead.
# Usage: data_prepare_test.sh MOR_BINARY SOURCE_DIR
set -uo pipefail
mor="$1"; src="$2"
tok="$src/tests/fixtures/tokenizer/trained-bpe/tokenizer.json"
tmp="$(mktemp -d)"; trap 'rm -rf "$tmp"' EXIT
# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
fail() { echo "FAIL $1"; failed=$((failed+1)); }

# The corpus: two text files in a directory, a JSONL file and a zstd-compressed JSONL file.
mkdir -p "$tmp/corpus/docs"
printf 'The first plain text document.\nIt has two lines.\n' >"$tmp/corpus/docs/a.txt"
printf 'Second document: unicode caf\xc3\xa9 and numbers 12345.\n' >"$tmp/corpus/docs/b.txt"
for i in $(seq 1 60); do printf '{"id": %d, "text": "JSON document %d with some words in it."}\n' "$i" "$i"; done >"$tmp/corpus/c.jsonl"
for i in $(seq 1 40); do printf '{"text": "compressed document %d"}\n' "$i"; done >"$tmp/plain.jsonl"
if command -v zstd >/dev/null; then
  zstd -q "$tmp/plain.jsonl" -o "$tmp/corpus/d.jsonl.zst"
else
  python3 - "$tmp/plain.jsonl" "$tmp/corpus/d.jsonl.zst" <<'EOF' 2>/dev/null || cp "$tmp/plain.jsonl" "$tmp/corpus/d.jsonl"
import sys, zstandard
open(sys.argv[2], "wb").write(zstandard.ZstdCompressor().compress(open(sys.argv[1], "rb").read()))
EOF
fi
docs=$((2 + 60 + 40))

check "prepare a mixed corpus" 0 "prepared $docs documents from 4 files" -- \
  "$mor" data prepare "$tmp/corpus" --tokenizer "$tok" --out "$tmp/out1" --val-fraction 0.1 --shard-tokens 300 --threads 1 -q
[ -f "$tmp/out1/manifest.json" ] || fail "no manifest written"
ls "$tmp/out1"/train_000000.bin "$tmp/out1"/train_000001.bin "$tmp/out1"/val_000000.bin >/dev/null 2>&1 || fail "expected shards missing"
grep -q '"documents": 10' "$tmp/out1/manifest.json" || fail "validation split is not round(102 * 0.1) = 10 documents"
check "verify the prepared directory" 0 "ok: train: 92 documents" -- "$mor" data verify "$tmp/out1" --tokenizer "$tok"

check "same command, more threads" 0 "prepared $docs documents" -- \
  "$mor" data prepare "$tmp/corpus" --tokenizer "$tok" --out "$tmp/out2" --val-fraction 0.1 --shard-tokens 300 --threads 3 -q
if diff -r "$tmp/out1" "$tmp/out2" >/dev/null; then echo "ok   output identical for 1 and 3 threads"; passed=$((passed+1));
else fail "outputs differ between thread counts"; fi

# Bad input: line 3 of a JSONL file is not JSON.
printf '{"text": "ok"}\n{"text": "ok too"}\n{"text": broken\n{"text": "fine"}\n' >"$tmp/bad.jsonl"
check "invalid JSON line names file:line" 1 "^mor: error: .*bad.jsonl:3: invalid JSON" -- \
  "$mor" data prepare "$tmp/bad.jsonl" --tokenizer "$tok" --out "$tmp/out3" -q
[ ! -e "$tmp/out3/manifest.json" ] || fail "a failed run left a manifest"
[ -z "$(ls "$tmp/out3" 2>/dev/null)" ] || fail "a failed run left files: $(ls "$tmp/out3")"
check "--skip-bad counts and skips" 0 "skipped: 1 bad records" -- \
  "$mor" data prepare "$tmp/bad.jsonl" --tokenizer "$tok" --out "$tmp/out3" --skip-bad -q
grep -q '"bad_records": 1' "$tmp/out3/manifest.json" || fail "manifest lacks the bad record count"
check "missing tokenizer" 1 "nope.json" -- "$mor" data prepare "$tmp/bad.jsonl" --tokenizer "$tmp/nope.json" --out "$tmp/out4"
check "missing input" 1 "no such file or directory: .*absent" -- \
  "$mor" data prepare "$tmp/absent" --tokenizer "$tok" --out "$tmp/out4"
check "bad --shard-tokens" 1 "--shard-tokens" -- "$mor" data prepare "$tmp/bad.jsonl" --tokenizer "$tok" --out "$tmp/out4" --shard-tokens 12X

echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
