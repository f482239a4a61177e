#!/usr/bin/env bash
# Builds the libFuzzer targets in build-fuzz/ (clang, ASan + UBSan) and
# runs them:
#
#   bash tests/fuzz/run.sh [SECONDS] [TARGET...]
#
# Every target first replays its regression inputs (tests/fuzz/regressions/
# <name>/) and its seeds; then, for SECONDS > 0 (default 5), fuzzes for
# SECONDS, starting from the seeds and from what earlier runs found
# (build-fuzz/corpus/<name>/, kept between runs).  Targets run in parallel,
# one per core.  TARGET names (e.g. record, or fuzz_record) pick some.
#
# Exits non-zero when any target crashes, leaks, trips UBSan, times out or
# breaks one of its checks; the input is then in build-fuzz/artifacts/
# <name>/ and the log in build-fuzz/logs/<name>.log.  Keep a fixed crash
# input under tests/fuzz/regressions/<name>/ (tests/fuzz/README.md).
set -euo pipefail
cd "$(dirname "$0")/../.."

secs=${1:-5}
shift || true
case "$secs" in
  '' | *[!0-9]*) echo "usage: $0 [SECONDS] [TARGET...]" >&2; exit 2 ;;
esac
build=build-fuzz
jobs=$(nproc)

# Debug keeps assert() on; -O1 is libFuzzer's usual trade between speed
# and build time.
CC=clang cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=Debug \
  -DCMAKE_C_FLAGS_DEBUG="-g -O1" -DPERMIT_FUZZ=ON >/dev/null
log="$build/fuzz-build.log"
cmake --build "$build" --target fuzz -j "$jobs" >"$log" 2>&1 || {
  tail -n 40 "$log"
  echo "fuzz: the build failed (log: $log)" >&2
  exit 1
}

targets=()
if [ $# -gt 0 ]; then
  for t in "$@"; do targets+=("${t#fuzz_}"); done
else
  for src in tests/fuzz/fuzz_*.c; do
    t=$(basename "$src" .c)
    targets+=("${t#fuzz_}")
  done
fi

# Leaks count as failures; UBSan already stops at the first finding
# (-fno-sanitize-recover).  The test command's own ASAN_OPTIONS do not
# apply here.
export ASAN_OPTIONS=detect_leaks=1
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
mkdir -p "$build/logs"

# Runs one target; prints one summary line; returns non-zero on failure.
run_one() {
  local t=$1 bin="$build/fuzz_$1" log="$build/logs/$1.log"
  local seeds="tests/fuzz/corpus/$t" regress="tests/fuzz/regressions/$t"
  local work="$build/corpus/$t" artifacts="$build/artifacts/$t/"
  if [ ! -x "$bin" ] || [ ! -d "$seeds" ]; then
    echo "fuzz_$t: no such target (or no seeds in $seeds)"
    return 1
  fi
  mkdir -p "$work" "$artifacts"
  : >"$log"
  local inputs=()
  if [ -d "$regress" ]; then
    while IFS= read -r -d '' f; do inputs+=("$f"); done \
      < <(find "$regress" -type f -print0 | sort -z)
  fi
  if [ ${#inputs[@]} -gt 0 ] &&
     ! "$bin" -artifact_prefix="$artifacts" "${inputs[@]}" >>"$log" 2>&1; then
    echo "fuzz_$t: FAILED on a regression input (log: $log)"
    return 1
  fi
  local opts=(-artifact_prefix="$artifacts" -timeout=10 -rss_limit_mb=2048
              -print_final_stats=1)
  if [ "$secs" -eq 0 ]; then
    "$bin" "${opts[@]}" -runs=0 "$seeds" >>"$log" 2>&1 || {
      echo "fuzz_$t: FAILED replaying the seeds (log: $log)"
      return 1
    }
    echo "fuzz_$t: ${#inputs[@]} regression inputs and the seeds pass"
    return 0
  fi
  if ! "$bin" "${opts[@]}" -max_total_time="$secs" "$work" "$seeds" \
       >>"$log" 2>&1; then
    echo "fuzz_$t: FAILED (log: $log; input in $artifacts)"
    return 1
  fi
  local runs rate cov corpus
  runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
  rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -n 1)
  cov=$(grep -o 'cov: [0-9]*' "$log" | tail -n 1 | cut -d' ' -f2)
  corpus=$(find "$work" -type f | wc -l)
  # One write per line: targets finish in parallel.
  local nseeds
  nseeds=$(find "$seeds" -type f | wc -l)
  printf '%s\n' "fuzz_$t: ${runs:-?} runs in ${secs}s (${rate:-?}/s), \
cov ${cov:-?}, $nseeds seeds + ${#inputs[@]} regression inputs, \
$corpus inputs in $work"
}

# One target per core; collect each one's status.
status_dir=$(mktemp -d)
trap 'rm -rf "$status_dir"' EXIT
running=0
for t in "${targets[@]}"; do
  if [ "$running" -ge "$jobs" ]; then
    wait -n || true
    running=$((running - 1))
  fi
  ( if run_one "$t"; then touch "$status_dir/$t.ok"; fi ) &
  running=$((running + 1))
done
wait

failed=0
for t in "${targets[@]}"; do
  [ -e "$status_dir/$t.ok" ] || failed=$((failed + 1))
done
if [ "$failed" -gt 0 ]; then
  echo "fuzz: $failed of ${#targets[@]} targets FAILED" >&2
  exit 1
fi
echo "fuzz: ${#targets[@]} targets passed"
