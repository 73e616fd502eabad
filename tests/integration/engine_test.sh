#!/usr/bin/env bash
# mor generate / serve / bench from the command line on a tiny MoR trained for a few steps:
# generate streams tokens (with depth tags and an HTML depth map) and greedy output equals
# `mor model generate` (full forward per token, no cache); serve answers completions (plain,
# streamed, echo+logprobs), health and metrics, rejects bad requests with 400 naming the field,
# and stops on SIGINT with exit 0; bench prints the MoR/vanilla ratio. Bad input: one line, exit 1.
# Usage: engine_test.sh MOR_BINARY SOURCE_DIR
set -uo pipefail
mor="$1"; src="$2"
tmp="$(mktemp -d)"
server_pid=""
trap '[ -n "$server_pid" ] && kill "$server_pid" 2>/dev/null; rm -rf "$tmp"' EXIT
# shellcheck source=tests/integration/lib.sh
source "$src/tests/integration/lib.sh"
export OMP_NUM_THREADS=1

prepare_corpus "$src/docs"
check "train a tiny MoR" 0 "done: 20 steps" -- \
  "$mor" train "$src/configs/model/tiny-mor-ec.yaml" "${corpus_args[@]}" --set train.seq_len=64 \
  --set train.micro_batch_size=4 --set train.global_batch_size=4 --set train.max_steps=20 --set train.warmup_steps=2 \
  --set train.eval_interval=0 --set train.eval_batches=1 --set "train.out_dir=$tmp/run"
check "export" 0 "exported" -- "$mor" export "$tmp/run" --out "$tmp/b"

prompt="The file system"
check "generate (greedy, depth tags, depth map)" 0 "finish: length" -- \
  "$mor" generate "$tmp/b" --prompt "$prompt" -n 16 --show-depth --depth-map "$tmp/depth.html"
grep -qE '\[[12]\]' "$tmp/out" && echo "ok   depth tags in the output" || { echo "FAIL no depth tags"; failed=$((failed+1)); }
grep -q "title=\"depth" "$tmp/depth.html" && echo "ok   depth map written" || { echo "FAIL depth map"; failed=$((failed+1)); }
"$mor" generate "$tmp/b" --prompt "$prompt" -n 16 >"$tmp/engine.txt" 2>/dev/null
"$mor" model generate "$tmp/b" --prompt "$prompt" -n 16 >"$tmp/plain.txt" 2>/dev/null
# mor generate echoes the prompt; mor model generate prints the continuation only.
if [ "$(cat "$tmp/engine.txt")" = "$prompt$(cat "$tmp/plain.txt")" ]; then
  echo "ok   engine greedy output equals the cache-free loop"; passed=$((passed+1))
else
  echo "FAIL engine vs cache-free greedy output differ:"; cat "$tmp/engine.txt"; echo "---"; cat "$tmp/plain.txt"
  failed=$((failed+1))
fi
check "generate: bad temperature" 1 "temperature: must be in \[0, 2\]" -- \
  "$mor" generate "$tmp/b" --prompt x --temperature 5
check "generate: not a model" 1 "not a bundle" -- "$mor" generate "$tmp/data" --prompt x

check "bench prints the MoR / vanilla ratio" 0 "MoR / vanilla: throughput [0-9.]+x" -- \
  "$mor" bench "$tmp/b" --batch 4 --prompt-len 16 --gen-len 8 --out "$tmp/bench.json"
grep -q '"tokens_per_s"' "$tmp/bench.json" && echo "ok   bench JSON" || { echo "FAIL bench json"; failed=$((failed+1)); }
check "bench: bad batch" 1 "--batch: 'lots'" -- "$mor" bench "$tmp/b" --batch lots

# serve on a free port (0), read the port from its first line
"$mor" serve "$tmp/b" --port 0 --set engine.kv_memory_mb=64 2>"$tmp/serve.log" &
server_pid=$!
port=""
for _ in $(seq 1 100); do
  port="$(grep -oE 'http://127.0.0.1:[0-9]+' "$tmp/serve.log" | head -1 | cut -d: -f3)"
  [ -n "$port" ] && break
  sleep 0.1
done
if [ -z "$port" ]; then echo "FAIL serve did not start"; cat "$tmp/serve.log"; exit 1; fi
url="http://127.0.0.1:$port"
check "serve /health" 0 '"status": ?"ok"' -- curl -sf "$url/health"
check "serve completion" 0 '"finish_reason": ?"length"' -- \
  curl -sf "$url/v1/completions" -d '{"prompt": "The file system", "max_tokens": 5, "temperature": 0}'
check "serve streaming ends with [DONE]" 0 "data: \[DONE\]" -- \
  curl -sfN "$url/v1/completions" -d '{"prompt": "The file", "max_tokens": 3, "stream": true}'
check "serve echo + logprobs (harness scoring)" 0 '"token_logprobs": ?\[null,' -- \
  curl -sf "$url/v1/completions" -d '{"prompt": "The file system", "max_tokens": 0, "echo": true, "logprobs": 1}'
check "serve: malformed JSON is a 400" 0 "^400$" -- \
  curl -s -o /dev/null -w '%{http_code}' "$url/v1/completions" -d '{"prompt": '
check "serve: out-of-range top_p names the field" 0 '"param": ?"top_p"' -- \
  curl -s "$url/v1/completions" -d '{"prompt": "x", "top_p": 7}'
check "serve /metrics" 0 "mor_generated_tokens_total [1-9]" -- curl -sf "$url/metrics"
kill -INT "$server_pid"
wait "$server_pid"; rc=$?; server_pid=""
if [ "$rc" -eq 0 ]; then echo "ok   serve stops on SIGINT with exit 0"; passed=$((passed+1)); else echo "FAIL serve exit $rc"; failed=$((failed+1)); fi

echo "engine_test: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
