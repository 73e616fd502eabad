#!/usr/bin/env bash
# Set up (idempotent), build, and run the whole test suite with CTest. Extra arguments go to ctest.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
build="${MOR_BUILD:-$repo/build}"
bash "$repo/tools/setup.sh"
cd "$build"
# ctest already runs one test process per core; one intra-op thread each avoids oversubscription.
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"
ctest --output-on-failure -j "${MOR_TEST_JOBS:-$(nproc)}" "$@"
