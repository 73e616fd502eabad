#!/usr/bin/env bash
# Prepares the embedded demo corpus that configs/demo.yaml trains on, from Debian packages:
#   - python3.11-doc: the Python 3.11 documentation sources (497 reStructuredText files, ~11 MB,
#     PSF licence) under /usr/share/doc/python3.11/html/_sources/;
#   - jargon-text: the Jargon File 4.4.7 (public domain, 1.7 MB), unpacked to data/demo/raw/.
# Then it trains a byte-level BPE tokenizer of model.vocab_size tokens on them when
# data.tokenizer (data/demo/tokenizer.json) is missing, and runs `mor data prepare` into data/demo/
# (train_*.bin, val_*.bin, manifest.json: the paths configs/demo.yaml names).
# Idempotent: does nothing when data/demo/manifest.json exists, verifies against the tokenizer and
# was made from the same inputs, split fraction and seed.
#   MOR_BUILD   build directory holding the mor executable (default <repo>/build)
#   MOR_THREADS tokenizer threads (default: every core)
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
build="${MOR_BUILD:-$repo/build}"
mor="$build/mor"
cd "$repo"  # relative paths below, so the manifest does not depend on where the checkout is
config="configs/demo.yaml"
out="data/demo"
raw="$out/raw"
pydocs="/usr/share/doc/python3.11/html/_sources"
jargon_gz="/usr/share/doc/jargon-text/jargon.txt.gz"

# shellcheck source=lib.sh
source "$repo/tools/lib.sh"
say() { printf '\033[1m[demo-data]\033[0m %s\n' "$*"; }
die() { printf '[demo-data] error: %s\n' "$*" >&2; exit 1; }

[ -x "$mor" ] || die "$mor not found: build first (bash tools/setup.sh)"

# 1. The Debian packages that carry the text.
ensure_debian_packages python3.11-doc jargon-text
[ -d "$pydocs" ] || die "$pydocs is missing although python3.11-doc is installed (a dpkg path-exclude rule for /usr/share/doc?)"
[ -f "$jargon_gz" ] || die "$jargon_gz is missing although jargon-text is installed (a dpkg path-exclude rule for /usr/share/doc?)"
mkdir -p "$raw"
if [ ! -s "$raw/jargon.txt" ]; then
  gzip -dc "$jargon_gz" >"$raw/jargon.txt.part" && mv "$raw/jargon.txt.part" "$raw/jargon.txt"
fi

# 2. Settings from the demo config (the resolved YAML, so defaults and the layer rules apply).
resolved="$("$mor" config show "$config")"
setting() {  # setting SECTION KEY: the value of SECTION.KEY in the resolved config
  awk -v section="$1:" -v key="$2:" '
    /^[^ ]/ { in_section = ($1 == section) }
    in_section && $1 == key { sub(/^[^:]*:[ ]*/, ""); sub(/[ ]+#.*$/, ""); gsub(/["'\'']/, ""); print; exit }
  ' <<<"$resolved"
}
vocab="$(setting model vocab_size)"
tokenizer="$(setting data tokenizer)"
text_field="$(setting data text_field)"
val_fraction="$(setting data val_fraction)"
seed="$(setting data seed)"
[ -n "$vocab" ] && [ -n "$tokenizer" ] && [ -n "$val_fraction" ] && [ -n "$seed" ] ||
  die "could not read model.vocab_size and data.{tokenizer,val_fraction,seed} from $config"
inputs=("$pydocs" "$raw/jargon.txt")

# 3. Already prepared from the same inputs with this tokenizer?
if [ -f "$out/manifest.json" ] && [ -f "$tokenizer" ] &&
   "$mor" data verify "$out" --tokenizer "$tokenizer" >/dev/null 2>&1 &&
   grep -qF "\"$pydocs\"" "$out/manifest.json" && grep -qF "\"$raw/jargon.txt\"" "$out/manifest.json" &&
   grep -qE "\"seed\": $seed,?$" "$out/manifest.json" && grep -qE "\"val_fraction\": $val_fraction,?$" "$out/manifest.json"; then
  say "data/demo is prepared and verified: $("$mor" data verify "$out" --tokenizer "$tokenizer" | sed 's/^[^:]*: ok: //')"
  exit 0
fi

threads=(); [ -n "${MOR_THREADS:-}" ] && threads=(--threads "$MOR_THREADS")

# 4. A tokenizer, when none is there yet.
if [ ! -f "$tokenizer" ]; then
  if "$mor" tokenizer train --help >/dev/null 2>&1; then
    say "training a $vocab-token byte-level BPE on the demo corpus (mor tokenizer train)"
    "$mor" tokenizer train "${inputs[@]}" --vocab-size "$vocab" --out "$tokenizer" "${threads[@]}" ||
      die "mor tokenizer train failed"
  elif "$mor" data prepare --help 2>/dev/null | grep -q -- "--train-tokenizer"; then
    say "training a $vocab-token byte-level BPE on the demo corpus (mor data prepare --train-tokenizer)"
  else
    die "no tokenizer at $tokenizer and this mor cannot train one (no 'mor tokenizer train'); give one at that path"
  fi
fi
train_flag=(); [ -f "$tokenizer" ] || train_flag=(--train-tokenizer "$vocab")

# 5. Shards + manifest.
say "tokenizing the demo corpus into $out"
"$mor" data prepare "${inputs[@]}" --tokenizer "$tokenizer" --out "$out" --text-field "$text_field" \
  --val-fraction "$val_fraction" --seed "$seed" "${train_flag[@]}" "${threads[@]}"
say "done: $("$mor" data verify "$out" --tokenizer "$tokenizer" | sed 's/^[^:]*: ok: //')"
