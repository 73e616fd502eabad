#!/usr/bin/env bash
# Builds the libFuzzer targets (clang from Debian, -fsanitize=fuzzer,address,undefined) against the
# torch-free io sources and runs each for a bounded time on a seed corpus of valid files.
# Usage: run_fuzz.sh SOURCE_DIR WORK_DIR [SECONDS_PER_TARGET]   (exit 0: no crash found)
set -euo pipefail
src="$1"; work="$2"; seconds="${3:-20}"
cxx="$(command -v clang++ || true)"
if [ -z "$cxx" ]; then echo "clang++ not installed (apt-get install clang): fuzzing skipped"; exit 0; fi
mkdir -p "$work"
flags=(-std=c++20 -O1 -g -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined -I"$src/include"
       -I/usr/include/nlohmann)
common=("$src/src/core/file.cpp")
io_tok=("$src"/src/io/tokenizer*.cpp)
build() {  # name sources...
  local name="$1"; shift
  if [ ! -x "$work/$name" ] || [ -n "$(find "$@" "$src/include" -newer "$work/$name" -print -quit)" ]; then
    echo "building $name"
    "$cxx" "${flags[@]}" "$@" -o "$work/$name" -lpcre2-8 -lpthread
  fi
}
build fuzz_safetensors "$src/tests/fuzz/fuzz_safetensors.cpp" "$src/src/io/safetensors.cpp" "${common[@]}"
build fuzz_gguf "$src/tests/fuzz/fuzz_gguf.cpp" "$src/src/io/gguf.cpp" "${io_tok[@]}" "${common[@]}"

# Seed corpora: the checked-in fixtures of each format.
for fmt in safetensors gguf; do
  mkdir -p "$work/corpus-$fmt"
  find "$src/tests/fixtures" -name "*.$fmt" -size -2M -exec cp {} "$work/corpus-$fmt/" \; 2>/dev/null || true
done
# A valid multi-tensor safetensors seed (no fixture is checked in for this format).
python3 - "$work/corpus-safetensors/seed.safetensors" <<'PY'
import json, struct, sys
hdr = {"__metadata__": {"k": "v"}, "a": {"dtype": "F32", "shape": [2, 2], "data_offsets": [0, 16]},
       "b": {"dtype": "BF16", "shape": [3], "data_offsets": [16, 22]}, "c": {"dtype": "I64", "shape": [], "data_offsets": [24, 32]}}
h = json.dumps(hdr).encode(); h += b" " * (-len(h) % 8)
open(sys.argv[1], "wb").write(struct.pack("<Q", len(h)) + h + bytes(range(32)))
PY
status=0
for fmt in safetensors gguf; do
  echo "fuzzing $fmt for ${seconds}s"
  (cd "$work" && ASAN_OPTIONS=detect_leaks=0 "./fuzz_$fmt" -max_total_time="$seconds" -max_len=65536 -timeout=10 \
     -print_final_stats=1 "corpus-$fmt" 2>&1 | tail -n 12) || status=1
done
exit $status
