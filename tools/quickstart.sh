#!/usr/bin/env bash
# The main job on the embedded default (configs/demo.yaml): set up, build, prepare the demo corpus
# (Debian's Python docs + Jargon File: train a BPE tokenizer, write token shards), then describe the
# demo MoR model (parameters, FLOPs and KV cache per recursion depth) and route a batch through it.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
build="${MOR_BUILD:-$repo/build}"
bash "$repo/tools/setup.sh"
cd "$repo"
MOR_BUILD="$build" bash "$repo/tools/demo_data.sh"
echo
echo "== resolved demo configuration (mor config show configs/demo.yaml) =="
"$build/mor" config show configs/demo.yaml
echo
echo "== demo model (mor model info configs/demo.yaml --instantiate) =="
"$build/mor" model info configs/demo.yaml --instantiate
