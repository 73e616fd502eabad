#!/usr/bin/env bash
# `mor eval` from the command line: a tiny MoR trained for a few steps is evaluated on every task of
# the hand-written fixtures (tests/fixtures/eval) from its run directory and from its exported
# bundle (same scores), at two batch sizes (same scores), with --log-samples, --routing topk, a
# --config file and --ppl on token shards; bad input gives one line on stderr and exit code 1.
# Usage: eval_test.sh MOR_BINARY SOURCE_DIR
set -uo pipefail
mor="$1"; src="$2"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
# shellcheck source=tests/integration/lib.sh
source "$src/tests/integration/lib.sh"
export OMP_NUM_THREADS=1

prepare_corpus "$src/docs"
check "train a tiny MoR for 3 steps" 0 "done: 3 steps" -- \
  "$mor" train "$src/configs/model/tiny-mor-ec.yaml" "${corpus_args[@]}" --set train.seq_len=128 \
  --set train.micro_batch_size=2 --set train.global_batch_size=2 --set train.max_steps=3 --set train.warmup_steps=1 \
  --set train.eval_interval=0 --set train.eval_batches=1 --set model.max_seq_len=1024 --set "train.out_dir=$tmp/run"
check "export it" 0 "exported" -- "$mor" export "$tmp/run" --out "$tmp/bundle"

fix="$src/tests/fixtures/eval"
tasks="lambada_openai,hellaswag,piqa,winogrande,arc_easy,arc_challenge,openbookqa,mmlu_fixture"
common=(--tasks "$tasks" --data-dir "$fix/data" --include-path "$fix/tasks" --bootstrap-iters 1000 -q)
check "all eight tasks from the run directory" 0 "mmlu_fixture .* acc" -- \
  "$mor" eval "$tmp/run" "${common[@]}" --batch-size 7 --log-samples --output "$tmp/e-run"
grep -q "routing: causal" "$tmp/e-run/results.md" && echo "ok   results.md names the routing" || { echo "FAIL routing"; failed=$((failed+1)); }
for f in results.json results.md samples_hellaswag.jsonl samples_mmlu_philosophy.jsonl samples_lambada_openai.jsonl; do
  if [ -s "$tmp/e-run/$f" ]; then echo "ok   wrote $f"; passed=$((passed+1)); else echo "FAIL missing $f"; failed=$((failed+1)); fi
done
check "the same from the exported bundle, batch size 1" 0 "mmlu_fixture" -- \
  "$mor" eval "$tmp/bundle" "${common[@]}" --batch-size 1 --output "$tmp/e-bundle"

# Scores (acc / acc_norm exactly, perplexity to 1e-6) do not depend on the model's source or the batch size.
compare() {
  python3 - "$1" "$2" <<'EOF'
import json, sys
a, b = (json.load(open(p)) for p in sys.argv[1:3])
bad = []
for task, ra in a["results"].items():
    rb = b["results"][task]
    for k, v in ra.items():
        if k in ("acc", "acc_norm", "n", "num_fewshot", "version", "requests") and v != rb[k]:
            bad.append(f"{task}.{k}: {v} != {rb[k]}")
        if k == "perplexity" and abs(v - rb[k]) > 1e-6 * abs(v):
            bad.append(f"{task}.{k}: {v} != {rb[k]}")
for g, ga in a["groups"].items():
    if ga["acc"] != b["groups"][g]["acc"]:
        bad.append(f"group {g}")
if len(a["results"]) != 11 or "mmlu_fixture" not in a["groups"]:
    bad.append(f"expected 11 tasks and the mmlu_fixture group, got {sorted(a['results'])} {sorted(a['groups'])}")
print("same scores" if not bad else "differ: " + "; ".join(bad))
sys.exit(1 if bad else 0)
EOF
}
check "run directory (batch 7) and bundle (batch 1) give the same scores" 0 "same scores" -- \
  compare "$tmp/e-run/results.json" "$tmp/e-bundle/results.json"
check "results.json records versions, seed, digests and routing" 0 "ok" -- python3 -c "
import json; r = json.load(open('$tmp/e-run/results.json'))
assert r['results']['hellaswag']['version'] == '1.0' and r['groups']['mmlu_fixture']['version'] == '2'
assert r['seeds']['fewshot_random_seed'] == 1234 and r['model']['digest'].startswith('fnv1a64:')
assert r['routing']['mode'] == 'causal' and r['results']['mmlu_marketing']['num_fewshot'] == 5
assert len(r['results']['piqa']['data_digest']) == 16
print('ok')"
check "--routing topk is reported as such" 0 "topk \(non-causal" -- \
  "$mor" eval "$tmp/bundle" --tasks piqa --data-dir "$fix/data" --routing topk --output "$tmp/e-topk"
check "--config with an eval section (paper-suite.yaml) and --set" 0 "arc_easy .* 2 " -- \
  "$mor" eval "$tmp/bundle" --config "$src/configs/eval/paper-suite.yaml" --set "eval.data_dir=$fix/data" \
  --tasks arc_easy --num-fewshot 2 -q --output "$tmp/e-cfg"
check "--ppl on token shards" 0 "perplexity on 1 shard\(s\): .* ppl [0-9.]+" -- \
  "$mor" eval "$tmp/bundle" --ppl "$tmp/data/val_*.bin" --seq-len 64 --max-rows 8 -q
check "--list" 0 "groups: .*mmlu" -- "$mor" eval --list

check "missing data names the file and the converter" 1 "missing data file .*/hellaswag/validation.jsonl .*convert_eval_data.py hellaswag" -- \
  "$mor" eval "$tmp/bundle" --tasks hellaswag --data-dir "$tmp/nothing" -q
check "unknown task lists the known ones" 1 "unknown task 'helaswag' \(known: .*hellaswag" -- \
  "$mor" eval "$tmp/bundle" --tasks helaswag --data-dir "$fix/data" -q
check "more shots than documents" 1 "arc_challenge: 9 shots requested but the few-shot split 'train' has only 8 documents" -- \
  "$mor" eval "$tmp/bundle" --tasks arc_challenge --num-fewshot 9 --data-dir "$fix/data" -q
check "bad routing" 1 "--routing: 'sideways'" -- "$mor" eval "$tmp/bundle" --tasks piqa --routing sideways -q
check "bad batch size" 1 "--batch-size must be positive" -- \
  "$mor" eval "$tmp/bundle" --tasks piqa --data-dir "$fix/data" --batch-size 0 -q
check "not a model" 1 "not a bundle" -- "$mor" eval "$tmp/data" --tasks piqa --data-dir "$fix/data" -q
check "nothing to do" 1 "nothing to do" -- "$mor" eval "$tmp/bundle"
printf '{"goal": "g", "sol1": "a", "sol2": "b", "label": 0}\n{"goal": "g"\n' >"$tmp/bad.jsonl"
mkdir -p "$tmp/baddata/piqa" && cp "$tmp/bad.jsonl" "$tmp/baddata/piqa/validation.jsonl"
check "malformed JSONL names file and line" 1 "piqa/validation.jsonl:2: invalid JSON" -- \
  "$mor" eval "$tmp/bundle" --tasks piqa --data-dir "$tmp/baddata" -q

echo "eval_test: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
