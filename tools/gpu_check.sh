#!/usr/bin/env bash
# Build with CUDA and run the GPU tests and benchmarks in one call, on a GPU machine that has torch,
# cmake and ninja but not our Debian libraries (e.g. the device tool's machine).
#
# Here (with network):  bash tools/gpu_check.sh --download   # fetches .deb files into .debs/
# There:                bash tools/gpu_check.sh              # unpacks .debs/ into /tmp/mor-deps, builds, runs
# Results land in $OUT (or ./gpu-results when OUT is unset), with summary.md listing every step's
# outcome and duration.
#
# Steps, in order (ONLY="name ..." runs a subset; the build is incremental, so on a warm machine a
# second call can run the rest: e.g. ONLY="build kernel_tests bench_attention model_tests train_tests"
# and then ONLY="build engine_tests eval_tests kernels_e2e bench_model engine train_demo"):
#   build            configure + build build-gpu (ninja -k 0: builds what it can)
#   kernel_tests     tests/kernels/mor_kernel_tests
#   bench_attention  mor_bench_attention --quick (BENCH_ATTENTION_ARGS replaces --quick): the kernels vs
#                    flash/ATen, bench_attention.md/.json                      (estimated 1-2 min)
#   model_tests, train_tests, engine_tests, eval_tests   the GoogleTest suites
#   kernels_e2e      benchmarks/kernels_e2e.sh: train step time and engine decode tokens/s with
#                    MOR_ATTENTION=aten vs auto, 360M widths with 8 layers; training needs data/demo
#                    carried (E2E_VARIANTS [ec share], E2E_STEPS [15], E2E_BATCH [32], ...) (estimated 2 min)
#   bench_model      Google Benchmark model benchmarks
#   engine           benchmarks/engine_throughput.sh (BATCH, PROMPT, GEN, KV_MB, HIDDEN)
#   train_demo       50 bf16 demo training steps (needs data/demo carried)
# A failing or timed-out step does not stop the others; the exit status is 1 if any step failed, timed
# out or was skipped for time. Every step runs under `timeout`: at most STEP_TIMEOUT seconds [420] and
# never past TIME_BUDGET seconds [560] from the start (later steps are then skipped), so one call
# stays inside the device tool's 10-minute limit; a cold full build plus every step likely needs two
# calls (see ONLY above).
# PACK=1: at the end, pack everything into results.tar.gz and keep only summary.md and the two kernel
# reports loose (the device tool brings back at most 8 files).
set -uo pipefail  # no -e: a failing step must not stop the others
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
debs="$repo/.debs"
pkgs=(libgloo-dev libyaml-cpp-dev libyaml-cpp0.7 libspdlog-dev libspdlog1.10 libfmt-dev libfmt9 libcli11-dev
      libgtest-dev libgmock-dev googletest libbenchmark-dev libbenchmark1debian nlohmann-json3-dev
      libpcre2-dev libpcre2-8-0 libpcre2-16-0 libpcre2-32-0 libpcre2-posix3 libzstd-dev libzstd1 pkg-config
      libcpp-httplib-dev libcpp-httplib0.11 libbrotli1)

if [ "${1:-}" = "--download" ]; then
  set -e
  mkdir -p "$debs" && cd "$debs" && apt-get download "${pkgs[@]}"
  grep -qx '/.debs/' "$repo/.git/info/exclude" 2>/dev/null || echo '/.debs/' >>"$repo/.git/info/exclude"
  echo "downloaded into $debs; carry .debs with the device run"
  exit 0
fi

start=$SECONDS
budget="${TIME_BUDGET:-560}"
step_timeout="${STEP_TIMEOUT:-420}"
out="${OUT:-$repo/gpu-results}"; mkdir -p "$out"
prefix=/tmp/mor-deps
for f in "$debs"/*.deb; do [ -f "$f" ] && dpkg -x "$f" "$prefix"; done
python="$(command -v python3)"
torch_prefix="$("$python" -c 'import torch.utils; print(torch.utils.cmake_prefix_path)')"
nvidia-smi | tee "$out/nvidia-smi.txt" | head -15
# pkg-config (PCRE2) from the unpacked .debs: sysroot-relative paths.
export PATH="$prefix/usr/bin:$PATH" PKG_CONFIG_SYSROOT_DIR="$prefix"
export PKG_CONFIG_PATH="$prefix/usr/lib/x86_64-linux-gnu/pkgconfig:$prefix/usr/share/pkgconfig"
export LD_LIBRARY_PATH="$prefix/usr/lib/x86_64-linux-gnu${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export repo python torch_prefix prefix
bin="$repo/build-gpu"

# shellcheck disable=SC2317  # invoked through bash -c
build_all() {
  set -o pipefail
  cmake -S "$repo" -B "$repo/build-gpu" -G Ninja -DCMAKE_BUILD_TYPE=Release -DMOR_WITH_CUDA=ON \
        -DMOR_CUDA_ARCHITECTURES=90 -DMOR_TORCH_PYTHON="$python" \
        -DCMAKE_PREFIX_PATH="$torch_prefix;$prefix/usr;$prefix/usr/lib/x86_64-linux-gnu/cmake" \
        -DCMAKE_INCLUDE_PATH="$prefix/usr/include" -DCMAKE_LIBRARY_PATH="$prefix/usr/lib/x86_64-linux-gnu" \
        2>&1 | tail -5 || return 1
  # -k 0: build every target that can be built, so one broken file costs only what depends on it.
  cmake --build "$repo/build-gpu" -j "$(nproc)" -- -k 0 2>&1 | sed '/^\[[0-9]*\/[0-9]*\] /d' | tail -40
}
export -f build_all

status=0
summary=()
want() { [ -z "${ONLY:-}" ] || [[ " $ONLY " == *" $1 "* ]]; }
# run_step NAME LOG COMMAND...: runs COMMAND under timeout, output to the console and $out/LOG.
run_step() {
  local name="$1" log="$2"; shift 2
  want "$name" || return 0
  local left=$(( budget - (SECONDS - start) ))
  if (( left < 30 )); then
    echo "== $name: skipped, time budget (${budget}s) spent"
    summary+=("| $name | skipped: time budget spent | 0 |")
    status=1
    return 0
  fi
  local limit=$(( left < step_timeout ? left : step_timeout ))
  local t0=$SECONDS rc result
  echo "== $name (limit ${limit}s)"
  timeout -k 10 "$limit" "$@" 2>&1 | tee "$out/$log"
  rc=${PIPESTATUS[0]}
  if (( rc == 0 )); then
    result=ok
  elif (( rc == 124 || rc == 137 )); then
    result="timed out after ${limit}s"
  else
    result="failed (exit $rc)"
  fi
  (( rc == 0 )) || status=1
  summary+=("| $name | $result | $(( SECONDS - t0 )) |")
}

run_step build build.txt bash -c build_all
run_step kernel_tests kernel_tests.txt "$bin/tests/kernels/mor_kernel_tests"
# shellcheck disable=SC2086  # BENCH_ATTENTION_ARGS is a list of flags
run_step bench_attention bench_attention.txt "$bin/benchmarks/mor_bench_attention" ${BENCH_ATTENTION_ARGS:---quick} \
  --out "$out/bench_attention.md" --json "$out/bench_attention.json"
run_step model_tests model_tests.txt "$bin/tests/mor_model_tests" --gtest_brief=1
run_step train_tests train_tests.txt "$bin/tests/mor_train_tests" --gtest_brief=1
run_step engine_tests engine_tests.txt "$bin/tests/mor_engine_run_tests" --gtest_brief=1
run_step eval_tests eval_tests.txt "$bin/tests/mor_eval_tests" --gtest_brief=1
# Kernels end to end (bf16, head dim 64): MOR_ATTENTION=aten vs auto; sizes budgeted for ~2 minutes.
run_step kernels_e2e kernels_e2e.txt env VARIANTS="${E2E_VARIANTS:-ec share}" STEPS="${E2E_STEPS:-15}" \
  LOG_INTERVAL="${E2E_LOG_INTERVAL:-5}" SEQ="${E2E_SEQ:-2048}" MICRO="${E2E_MICRO:-8}" LAYERS="${E2E_LAYERS:-8}" \
  BATCH="${E2E_BATCH:-32}" PROMPT="${E2E_PROMPT:-256}" GEN="${E2E_GEN:-64}" KV_MB="${E2E_KV_MB:-8192}" \
  RUN_TIMEOUT="${E2E_RUN_TIMEOUT:-120}" \
  bash "$repo/benchmarks/kernels_e2e.sh" "$bin/mor" "$repo" "$out/kernels_e2e.md"
run_step bench_model bench_model.txt "$bin/benchmarks/mor_bench_model" --benchmark_out="$out/bench_model.json"
# Engine decode throughput on the GPU (bf16), MoR N_r = 2, 3, 4 vs vanilla; CPU-sized models unless overridden.
run_step engine engine_throughput.txt env BATCH="${BATCH:-32}" PROMPT="${PROMPT:-128}" GEN="${GEN:-128}" \
  KV_MB="${KV_MB:-4096}" HIDDEN="${HIDDEN:-1024}" \
  bash "$repo/benchmarks/engine_throughput.sh" "$bin/mor" "$repo" "$out/engine_throughput.md"
# Training on the GPU (bf16, NCCL when more than one GPU): needs the demo data carried in data/demo. The run
# directory (checkpoints) stays outside $out; its metrics are copied.
if [ -f "$repo/data/demo/tokenizer.json" ]; then
  rm -rf /tmp/mor-gpu-demo
  run_step train_demo train_demo.txt "$bin/mor" train "$repo/configs/demo.yaml" --set train.device=cuda \
    --set train.max_steps=50 --set train.out_dir=/tmp/mor-gpu-demo --no-resume
  if want train_demo && [ -f /tmp/mor-gpu-demo/metrics.jsonl ]; then cp /tmp/mor-gpu-demo/metrics.jsonl "$out/train_demo_metrics.jsonl"; fi
elif want train_demo; then
  summary+=("| train_demo | skipped: no data/demo (carry it) | 0 |")
fi

{
  echo "# gpu_check summary"
  echo
  echo "GPU: $(nvidia-smi --query-gpu=name,driver_version --format=csv,noheader 2>/dev/null | head -n 1)"
  echo
  echo "| step | result | seconds |"
  echo "|---|---|---:|"
  printf '%s\n' "${summary[@]}"
  echo
  echo "total $(( SECONDS - start )) s; exit status $status"
} >"$out/summary.md"
cat "$out/summary.md"

if [ "${PACK:-0}" = 1 ]; then
  (cd "$out" && tar czf /tmp/mor-gpu-results.tar.gz --exclude=results.tar.gz . && mv /tmp/mor-gpu-results.tar.gz results.tar.gz &&
   find . -maxdepth 1 -type f ! -name results.tar.gz ! -name summary.md ! -name bench_attention.md \
     ! -name kernels_e2e.md -delete && find . -mindepth 1 -maxdepth 1 -type d -exec rm -rf {} +) ||
    echo "packing the results failed" >&2
fi
exit $status
