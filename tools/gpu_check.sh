#!/usr/bin/env bash
# Build with CUDA and run the GPU tests and benchmarks in one call, on a GPU machine that has torch,
# cmake and ninja but not our Debian libraries (e.g. the device tool's machine).
#
# Here (with network):  bash tools/gpu_check.sh --download   # fetches .deb files into .debs/
# There:                bash tools/gpu_check.sh              # unpacks .debs/ into /tmp/mor-deps, builds, runs
# Results land in $OUT (or ./gpu-results when OUT is unset).
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
debs="$repo/.debs"
pkgs=(libgloo-dev libyaml-cpp-dev libyaml-cpp0.7 libspdlog-dev libspdlog1.10 libfmt-dev libfmt9 libcli11-dev
      libgtest-dev libgmock-dev googletest libbenchmark-dev libbenchmark1debian nlohmann-json3-dev
      libpcre2-dev libpcre2-8-0 libpcre2-16-0 libpcre2-32-0 libpcre2-posix3 libzstd-dev libzstd1 pkg-config
      libcpp-httplib-dev libcpp-httplib0.11 libbrotli1)

if [ "${1:-}" = "--download" ]; then
  mkdir -p "$debs" && cd "$debs" && apt-get download "${pkgs[@]}"
  grep -qx '/.debs/' "$repo/.git/info/exclude" 2>/dev/null || echo '/.debs/' >>"$repo/.git/info/exclude"
  echo "downloaded into $debs; carry .debs with the device run"
  exit 0
fi

out="${OUT:-$repo/gpu-results}"; mkdir -p "$out"
prefix=/tmp/mor-deps
for f in "$debs"/*.deb; do dpkg -x "$f" "$prefix"; done
python="$(command -v python3)"
torch_prefix="$("$python" -c 'import torch.utils; print(torch.utils.cmake_prefix_path)')"
nvidia-smi | tee "$out/nvidia-smi.txt" | head -15
# pkg-config (PCRE2) from the unpacked .debs: sysroot-relative paths.
export PATH="$prefix/usr/bin:$PATH" PKG_CONFIG_SYSROOT_DIR="$prefix"
export PKG_CONFIG_PATH="$prefix/usr/lib/x86_64-linux-gnu/pkgconfig:$prefix/usr/share/pkgconfig"
cmake -S "$repo" -B "$repo/build-gpu" -G Ninja -DCMAKE_BUILD_TYPE=Release -DMOR_WITH_CUDA=ON \
      -DMOR_CUDA_ARCHITECTURES=90 -DMOR_TORCH_PYTHON="$python" \
      -DCMAKE_PREFIX_PATH="$torch_prefix;$prefix/usr;$prefix/usr/lib/x86_64-linux-gnu/cmake" \
      -DCMAKE_INCLUDE_PATH="$prefix/usr/include" -DCMAKE_LIBRARY_PATH="$prefix/usr/lib/x86_64-linux-gnu" \
      2>&1 | tail -5
export LD_LIBRARY_PATH="$prefix/usr/lib/x86_64-linux-gnu${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
cmake --build "$repo/build-gpu" -j "$(nproc)" 2>&1 | tail -3
status=0
"$repo/build-gpu/tests/kernels/mor_kernel_tests" 2>&1 | tee "$out/kernel_tests.txt" || status=1
"$repo/build-gpu/tests/mor_model_tests" --gtest_brief=1 2>&1 | tee "$out/model_tests.txt" || status=1
"$repo/build-gpu/tests/mor_train_tests" --gtest_brief=1 2>&1 | tee "$out/train_tests.txt" || status=1
"$repo/build-gpu/tests/mor_engine_run_tests" --gtest_brief=1 2>&1 | tee "$out/engine_tests.txt" || status=1
"$repo/build-gpu/tests/mor_eval_tests" --gtest_brief=1 2>&1 | tee "$out/eval_tests.txt" || status=1
"$repo/build-gpu/benchmarks/mor_bench_model" --benchmark_out="$out/bench_model.json" 2>&1 | tee "$out/bench_model.txt" || status=1
# Engine decode throughput on the GPU (bf16), MoR N_r = 2, 3, 4 vs vanilla; CPU-sized models unless overridden.
BATCH="${BATCH:-32}" PROMPT="${PROMPT:-128}" GEN="${GEN:-128}" KV_MB="${KV_MB:-4096}" HIDDEN="${HIDDEN:-1024}" \
  bash "$repo/benchmarks/engine_throughput.sh" "$repo/build-gpu/mor" "$repo" "$out/engine_throughput.md" || status=1
# Training on the GPU (bf16, NCCL when more than one GPU): needs the demo data carried in data/demo.
if [ -f "$repo/data/demo/tokenizer.json" ]; then
  "$repo/build-gpu/mor" train "$repo/configs/demo.yaml" --set train.device=cuda --set train.max_steps=50 \
    --set "train.out_dir=$out/gpu-demo" --no-resume 2>&1 | tee "$out/train_demo.txt" || status=1
fi
exit $status
