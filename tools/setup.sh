#!/usr/bin/env bash
# Idempotent set-up on Debian 12: system packages, LibTorch (PyPI torch wheel) in a virtualenv at a
# fixed place outside the checkout (reused when present), then CMake configure + build.
#   MOR_VENV   virtualenv location     (default ~/.local/share/mor/venv)
#   MOR_BUILD  build directory         (default <repo>/build)
#   MOR_JOBS   parallel build jobs     (default: number of cores)
#   MOR_TARGETS targets to build       (default: all)
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${MOR_VENV:-$HOME/.local/share/mor/venv}"
build="${MOR_BUILD:-$repo/build}"
jobs="${MOR_JOBS:-$(nproc)}"
torch_version="2.11.0"

# shellcheck source=lib.sh
source "$repo/tools/lib.sh"
say() { printf '\033[1m[setup]\033[0m %s\n' "$*"; }

# 1. Debian packages (only the missing ones are installed).
packages=(build-essential cmake ninja-build ccache pkg-config git
          libyaml-cpp-dev libspdlog-dev libfmt-dev libcli11-dev libgtest-dev libgmock-dev
          libbenchmark-dev nlohmann-json3-dev libpcre2-dev libzstd-dev libgloo-dev libcpp-httplib-dev curl
          clang libclang-rt-14-dev  # libFuzzer targets (tests/fuzz)
          python3.11-doc jargon-text)  # the last two carry the demo corpus (tools/demo_data.sh)
python3 -m venv --help >/dev/null 2>&1 || packages+=(python3 python3-venv)
ensure_debian_packages "${packages[@]}"

# 2. LibTorch from PyPI in the project virtualenv.
if ! "$venv/bin/python" -c "import torch, sys; sys.exit(0 if torch.__version__.split('+')[0] == '$torch_version' else 1)" 2>/dev/null; then
  say "installing torch==$torch_version into $venv (large download, once)"
  python3 -m venv "$venv"
  "$venv/bin/python" -m pip install -q --upgrade pip
  "$venv/bin/python" -m pip install -q "torch==$torch_version"
fi
if ! "$venv/bin/python" -c 'import matplotlib' 2>/dev/null; then
  say "installing matplotlib into $venv (tools/plot_metrics.py)"
  "$venv/bin/python" -m pip install -q matplotlib
fi
if ! "$venv/bin/python" -c 'import transformers' 2>/dev/null; then
  say "installing transformers into $venv (tests/integration/hf_parity_test.sh)"
  "$venv/bin/python" -m pip install -q "transformers==5.24.0"
fi
if ! "$venv/bin/python" -c "import lm_eval, tenacity" 2>/dev/null; then
  say "installing lm-eval into $venv (harness parity tests: lm_eval_parity_test.sh, lm_eval_serve_test.sh)"
  "$venv/bin/python" -m pip install -q "lm-eval[hf,api]==0.4.13"
fi
torch_prefix="$("$venv/bin/python" -c 'import torch.utils; print(torch.utils.cmake_prefix_path)' 2>/dev/null)"

# 3. Configure (once) and build.
export CUDA_HOME="${CUDA_HOME:-/usr/local/cuda}"
if [ -d "$CUDA_HOME/lib64/stubs" ]; then
  export LIBRARY_PATH="$CUDA_HOME/lib64/stubs${LIBRARY_PATH:+:$LIBRARY_PATH}"
fi
if [ ! -f "$build/build.ninja" ]; then
  say "configuring $build"
  cmake -S "$repo" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release \
        -DCMAKE_PREFIX_PATH="$torch_prefix" -DMOR_TORCH_PYTHON="$venv/bin/python" >"$build.configure.log" 2>&1 \
    || { cat "$build.configure.log"; exit 1; }
fi
say "building ($jobs jobs)"
# shellcheck disable=SC2086
cmake --build "$build" -j "$jobs" ${MOR_TARGETS:+--target $MOR_TARGETS}
say "done: $build/mor"
