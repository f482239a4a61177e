#!/usr/bin/env bash
# The test command: installs what is missing, builds the tree twice
# (optimised, and with AddressSanitizer + UBSan) and runs every test in
# both builds.  Exits non-zero on the first failure.
set -euo pipefail
cd "$(dirname "$0")/.."
bash deploy/install-deps.sh test

jobs=$(nproc)
echo "== build (RelWithDebInfo) =="
cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build -j "$jobs"
echo "== build (ASan + UBSan) =="
cmake -S . -B build-asan -DCMAKE_BUILD_TYPE=Debug -DPERMIT_SANITIZE=ON >/dev/null
cmake --build build-asan -j "$jobs"

export ASAN_OPTIONS=detect_leaks=1:abort_on_error=0:exitcode=86
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
echo "== tests under ASan + UBSan =="
(cd build-asan && ctest --output-on-failure -j "$jobs")
echo "== tests =="
(cd build && ctest --output-on-failure -j "$jobs")
# libFuzzer targets (clang build in build-fuzz/): regression inputs, then
# 5 s of fuzzing each; any crash, leak or UBSan finding fails the run.
echo "== fuzz smoke =="
bash tests/fuzz/run.sh 5
