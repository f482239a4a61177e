#!/usr/bin/env bash
# Reruns the log benchmark: one durable append and proofs on a 1,000,000
# entry log, with same-run baselines (a synced RocksDB put, a point read).
#   tests/bench/run-log-bench.sh [ENTRIES]
# The database goes in build/bench-log (on disk, reused between runs).
set -euo pipefail
cd "$(dirname "$0")/../.."
bash deploy/install-deps.sh build
cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build -j "$(nproc)" --target bench_log >/dev/null
rm -rf build/bench-log
build/bench_log build/bench-log "${1:-1000000}"
