#!/usr/bin/env bash
# `mor export`, `mor import hf`, `mor ckpt inspect` and `mor model logits|generate` end to end: a
# tiny MoR and a tiny vanilla model trained for a few steps on the repository's docs, exported
# from run and checkpoint directories (1 and 2 ranks, sharded, bf16), inspected, imported back bit
# for bit, run; bad input gives one-line errors.
# Usage: export_test.sh MOR_BINARY SOURCE_DIR [PYTHON]
set -uo pipefail
mor="$1"; src="$2"; py="${3:-python3}"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
# shellcheck source=tests/integration/lib.sh
source "$src/tests/integration/lib.sh"
export OMP_NUM_THREADS=1

prepare_corpus "$src/docs" "$src/README.md"
base=("${corpus_args[@]}" --set train.seq_len=64 --set train.micro_batch_size=2 --set train.global_batch_size=4
      --set train.max_steps=4 --set train.warmup_steps=1 --set train.log_interval=1 --set train.eval_interval=0
      --set train.eval_batches=1 --set train.save_interval=2 --set train.keep_checkpoints=0)
vanilla=(--set model.recursion.sharing=none --set model.recursion.num_recursions=1 --set model.router.kind=none)
run() { local dir="$1"; shift; "$mor" train "$src/configs/demo.yaml" "${base[@]}" --set "train.out_dir=$tmp/$dir" "$@"; }
tokens="1,17,42,7,300,5,99,123,8,64,2,610"

# Max |a - b| of the "logits" tensors of two F32 safetensors files, relative to max |b|.
rel_diff() { "$py" -c '
import json, struct, sys
from array import array
def load(p):
    with open(p, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]; h = json.loads(f.read(n)); d = f.read()
    b, e = h["logits"]["data_offsets"]; a = array("f"); a.frombytes(d[b:e]); return a
x, y = load(sys.argv[1]), load(sys.argv[2])
print("%.3g" % (max(abs(p - q) for p, q in zip(x, y)) / max(abs(q) for q in y)))' "$1" "$2"; }

check "train MoR, 1 rank" 0 "done: 4 steps" -- run one
check "train MoR, 2 ranks (zero3)" 0 "done: 4 steps" -- run two --nproc 2 --set train.sharding=zero3
check "train vanilla" 0 "done: 4 steps" -- run van "${vanilla[@]}"

check "export a run (newest checkpoint)" 0 "exported .*step-00000004 \(step 4\) to .*: [0-9]+ tensors" -- \
  "$mor" export "$tmp/one" --out "$tmp/b1"
check "bundle files" 0 "^config.json generation_config.json model.safetensors mor_bundle.json mor_config.yaml tokenizer.json$" -- \
  bash -c "ls '$tmp/b1' | tr '\n' ' ' | sed 's/ \$//'"
check "export a checkpoint directory" 0 "exported .*step-00000002 \(step 2\)" -- \
  "$mor" export "$tmp/one/checkpoints/step-00000002" --out "$tmp/b1s2"
check "inspect bundle: format and version" 0 "format mor-bundle, version 1" -- "$mor" ckpt inspect "$tmp/b1"
check "inspect bundle: config, tensors and totals" 0 "MoR expert-choice \(middle_cycle, N_r 2.*model.routers.0.weight +F32 +\[1, 64\].*total +[0-9]+" -- \
  bash -c "'$mor' ckpt inspect '$tmp/b1' | tr '\n' ' '"
check "inspect checkpoint: rank file sizes" 0 "rank-00000-of-00001.safetensors +[0-9.]+ (kB|MB)" -- \
  "$mor" ckpt inspect "$tmp/one/checkpoints/step-00000004"
check "inspect run: its checkpoints" 0 "run .*: 2 complete checkpoint\(s\): step-00000002 step-00000004" -- \
  "$mor" ckpt inspect "$tmp/one"
check "inspect a 2-rank checkpoint" 0 "rank-00001-of-00002.safetensors" -- "$mor" ckpt inspect "$tmp/two"
check "inspect a safetensors file" 0 "model.embed_tokens.weight +F32 +\[640, 64\] +40960" -- \
  "$mor" ckpt inspect "$tmp/b1/model.safetensors"

# 2 ranks: the export reassembles the slices of both rank files.
check "export a 2-rank run" 0 "exported .*step-00000004" -- "$mor" export "$tmp/two" --out "$tmp/b2"
check "logits of the 1-rank export" 0 "argmax:( [0-9]+){12}" -- "$mor" model logits "$tmp/b1" --tokens "$tokens" --out "$tmp/l1.safetensors"
check "logits of the 2-rank export" 0 "argmax:" -- "$mor" model logits "$tmp/b2" --tokens "$tokens" --out "$tmp/l2.safetensors"
d="$(rel_diff "$tmp/l2.safetensors" "$tmp/l1.safetensors")"
check "2-rank vs 1-rank export logits agree (relative difference $d <= 1e-3)" 0 "^ok$" -- \
  "$py" -c 'import sys; print("ok" if float(sys.argv[1]) <= 1e-3 else sys.argv[1])' "$d"

check "sharded export" 0 "exported" -- "$mor" export "$tmp/one" --out "$tmp/bs" --max-shard-size 20KB
check "sharded export has an index and several files" 0 "model-00001-of-000[0-9]+.safetensors.*model.safetensors.index.json" -- \
  bash -c "ls '$tmp/bs' | tr '\n' ' '"
"$mor" model logits "$tmp/bs" --tokens "$tokens" --out "$tmp/ls.safetensors" >/dev/null 2>&1
check "sharded bundle gives the same logits" 0 "" -- cmp "$tmp/ls.safetensors" "$tmp/l1.safetensors"
check "bf16 export" 0 "bfloat16" -- "$mor" export "$tmp/one" --out "$tmp/bb" --dtype bfloat16
check "bf16 bundle stores BF16 tensors" 0 "model.norm.weight +BF16 +\[64\]" -- "$mor" ckpt inspect "$tmp/bb"
check "bf16 bundle runs" 0 "argmax:" -- "$mor" model logits "$tmp/bb" --tokens "$tokens"

# Import: our vanilla export read as a Hugging Face directory gives the same bytes back.
check "export vanilla" 0 "exported" -- "$mor" export "$tmp/van" --out "$tmp/vb"
check "vanilla config.json is a Llama config" 0 "\"model_type\": \"llama\"" -- cat "$tmp/vb/config.json"
check "import hf of the vanilla export" 0 "imported .* vanilla Llama.*float32" -- "$mor" import hf "$tmp/vb" --out "$tmp/vi"
check "import round-trips model.safetensors bit for bit" 0 "" -- cmp "$tmp/vb/model.safetensors" "$tmp/vi/model.safetensors"
check "import keeps the tokenizer" 0 "" -- cmp "$tmp/vb/tokenizer.json" "$tmp/vi/tokenizer.json"
check "import hf of a MoR export round-trips too" 0 "imported .*MoR expert-choice" -- "$mor" import hf "$tmp/b1" --out "$tmp/mi"
check "MoR import is bit for bit" 0 "" -- cmp "$tmp/b1/model.safetensors" "$tmp/mi/model.safetensors"
check "import --dtype bfloat16" 0 "bfloat16" -- "$mor" import hf "$tmp/vb" --out "$tmp/vib" --dtype bfloat16
check "generate from a bundle (greedy)" 0 "." -- "$mor" model generate "$tmp/b1" --prompt "The model" --max-tokens 8
check "generate is deterministic with a seed" 0 "^same$" -- bash -c "
  a=\$('$mor' model generate '$tmp/vb' --prompt 'Training' -n 6 -t 0.8 --seed 3)
  b=\$('$mor' model generate '$tmp/vb' --prompt 'Training' -n 6 -t 0.8 --seed 3)
  [ \"\$a\" = \"\$b\" ] && echo same"

# Bad input: one line on stderr, exit 1.
check "export of a missing directory" 1 "nothing: no such directory" -- "$mor" export "$tmp/nothing" --out "$tmp/x"
check "export of a directory without checkpoints" 1 "data: neither a checkpoint .* nor a run directory" -- \
  "$mor" export "$tmp/data" --out "$tmp/x"
cp -r "$tmp/one/checkpoints/step-00000002" "$tmp/torn"; rm "$tmp/torn/COMPLETE"
check "export of an incomplete checkpoint" 1 "torn: incomplete checkpoint" -- "$mor" export "$tmp/torn" --out "$tmp/x"
# Corrupt checkpoints (read through train::CheckpointReader, as resume does).
cp -r "$tmp/two/checkpoints/step-00000004" "$tmp/cver"
sed -i 's/"format_version": 1/"format_version": 99/' "$tmp/cver/index.json"
check "checkpoint of an unknown format version" 1 "cver/index.json: format_version: checkpoint format version 99 is not supported" -- \
  "$mor" export "$tmp/cver" --out "$tmp/x"
cp -r "$tmp/two/checkpoints/step-00000004" "$tmp/cmiss"; rm "$tmp/cmiss/rank-00001-of-00002.safetensors"
check "checkpoint missing a rank file" 1 "cmiss/rank-00001-of-00002.safetensors" -- "$mor" export "$tmp/cmiss" --out "$tmp/x"
cp -r "$tmp/two/checkpoints/step-00000004" "$tmp/ctrunc"
truncate -s 100 "$tmp/ctrunc/rank-00000-of-00002.safetensors"
check "checkpoint with a truncated rank file" 1 "ctrunc/rank-00000-of-00002.safetensors" -- "$mor" export "$tmp/ctrunc" --out "$tmp/x"
check "unknown --dtype" 1 "--dtype: unknown dtype 'int8'" -- "$mor" export "$tmp/one" --out "$tmp/x" --dtype int8
check "bad --max-shard-size" 1 "--max-shard-size: unknown unit 'XB'" -- "$mor" export "$tmp/one" --out "$tmp/x" --max-shard-size 5XB
check "export over a non-bundle directory" 1 "data: exists and is not a bundle" -- "$mor" export "$tmp/one" --out "$tmp/data"
check "import hf without config.json" 1 "data/config.json: no such file" -- "$mor" import hf "$tmp/data" --out "$tmp/x"
cp -r "$tmp/vb" "$tmp/vbad"
sed -i 's/"hidden_act": "silu"/"hidden_act": "gelu"/' "$tmp/vbad/config.json"
check "import hf of an unsupported config" 1 "vbad/config.json: hidden_act: 'gelu' is not supported" -- \
  "$mor" import hf "$tmp/vbad" --out "$tmp/x"
cp -r "$tmp/vb" "$tmp/vver"
sed -i 's/"format_version": 1/"format_version": 99/' "$tmp/vver/mor_bundle.json"
check "a bundle of an unknown format version" 1 "vver/mor_bundle.json: format_version: bundle format version 99 is not supported" -- \
  "$mor" model logits "$tmp/vver" --tokens 1,2
check "logits: token outside the vocabulary" 1 "--tokens: id 640 is outside the vocabulary \[0, 640\)" -- \
  "$mor" model logits "$tmp/vb" --tokens 1,640
check "inspect of a missing path" 1 "nope: no such file or directory" -- "$mor" ckpt inspect "$tmp/nope"
check "inspect of a non-safetensors file" 1 "not a .safetensors file" -- "$mor" ckpt inspect "$tmp/vb/config.json"
check "truncated safetensors" 1 "model.safetensors" -- bash -c "
  cp -r '$tmp/vb' '$tmp/vtrunc' && truncate -s 1000 '$tmp/vtrunc/model.safetensors' && '$mor' model logits '$tmp/vtrunc' --tokens 1,2"

echo "export_test: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
