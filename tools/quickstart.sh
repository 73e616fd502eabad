#!/usr/bin/env bash
# The main job on the embedded default (configs/demo.yaml): set up, build, prepare the demo corpus
# (Debian's Python docs + Jargon File: train a BPE tokenizer, write token shards), then describe the
# demo MoR model (parameters, FLOPs and KV cache per recursion depth), train it (mor train: a few
# minutes on 2 cores; rerunning resumes from the last checkpoint, or reports it is done) and plot
# the loss curves to runs/demo/metrics.png, evaluate it (mor eval: validation perplexity, and the
# few-shot suite on the checked-in fixture items) and sample from it (mor export + mor model generate).
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
echo
echo "== training the demo MoR (mor train configs/demo.yaml; Ctrl-C saves a checkpoint, rerun to resume) =="
"$build/mor" train configs/demo.yaml
venv="${MOR_VENV:-$HOME/.local/share/mor/venv}"
if "$venv/bin/python" -c 'import matplotlib' 2>/dev/null; then
  "$venv/bin/python" tools/plot_metrics.py runs/demo --out runs/demo/metrics.png
  echo "loss curves: runs/demo/metrics.png (metrics: runs/demo/metrics.jsonl, log: runs/demo/train.log)"
fi
echo
echo "== evaluating (mor eval): validation perplexity and the 8-task few-shot suite on fixture items =="
"$build/mor" eval runs/demo --ppl 'data/demo/val_*.bin' --max-rows 64 \
  --tasks lambada_openai,hellaswag,piqa,winogrande,arc_easy,arc_challenge,openbookqa,mmlu_fixture \
  --data-dir tests/fixtures/eval/data --include-path tests/fixtures/eval/tasks --output runs/demo/eval
echo "(the fixture items are a few invented questions per task: the suite runs end to end, but the"
echo " scores mean nothing. Real benchmarks: docs/eval-data.md, then mor eval runs/demo --tasks ...)"
echo
echo "== sampling (mor export + mor model generate) =="
"$build/mor" export runs/demo --out runs/demo/bundle >/dev/null
"$build/mor" model generate runs/demo/bundle --prompt "The hacker" --max-tokens 40 --temperature 0.8 --seed 1
