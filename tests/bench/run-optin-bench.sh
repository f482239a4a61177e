#!/usr/bin/env bash
# The opt-in benchmark, rerunnable; every figure next to its ceiling
# measured in the same run:
#   1. the crypto ceiling of this machine (openssl speed: Ed25519 sign and
#      verify, X25519), as records per second on all cores: one sign and
#      two X25519 to issue, one verify and one X25519 to receive;
#   2. durable RecordOptIn throughput with 64 calls in flight;
#   3. p50/p99 latency at half that rate;
#   4. the sync rate of a venue catching up on RECORDS records (default
#      1,000,000), and the venue's peak RSS meanwhile;
#   5. disk bytes per record on both nodes after compaction.
# fsync stays on throughout (every acknowledged write is synced).
#   tests/bench/run-optin-bench.sh [RECORDS]
# Environment:
#   PERMIT_BUILD_DIR  the build directory to configure, build and run from
#                     (default build/, in the source tree)
#   PERMIT_PERF_DIR   when set, the reseller during step 2 and the venue
#                     during step 4 run under `perf record -e cpu-clock -g`,
#                     and the flat profiles (perf report --no-children) are
#                     written there as issue.txt and sync.txt
set -euo pipefail
cd "$(dirname "$0")/../.."
records=${1:-1000000}
bdir=${PERMIT_BUILD_DIR:-build}
perf_dir=${PERMIT_PERF_DIR:-}
bash deploy/install-deps.sh demo >/dev/null
cmake -S . -B "$bdir" -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build "$bdir" -j "$(nproc)" >/dev/null
permitd=$bdir/permitd; ctl=$bdir/permitctl
cores=$(nproc)
work=$(mktemp -d "${TMPDIR:-/var/tmp}/permit-bench-XXXXXX")
pids=()
perf_pid=
cleanup() {
  [ -z "$perf_pid" ] || kill -INT "$perf_pid" 2>/dev/null || true
  kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$work"
}
trap cleanup EXIT
# perf_start PID NAME / perf_stop: profile one node while a step runs.
perf_start() {
  [ -n "$perf_dir" ] || return 0
  mkdir -p "$perf_dir"
  perf record -q -e cpu-clock -g -p "$1" -o "$perf_dir/$2.data" 2>/dev/null &
  perf_pid=$!; perf_name=$2
}
perf_stop() {
  [ -n "$perf_pid" ] || return 0
  kill -INT "$perf_pid"; wait "$perf_pid" 2>/dev/null || true; perf_pid=
  { perf report -i "$perf_dir/$perf_name.data" --no-children --sort dso,symbol \
      -g none 2>/dev/null | grep -v '^#' | grep '%' | head -80; } \
    >"$perf_dir/$perf_name.txt" || true
}
# CPU seconds (user + system) process $1 has used so far.
cpu_s() { awk -v t="$(getconf CLK_TCK)" '{print ($14 + $15) / t}' "/proc/$1/stat"; }
# cpu_line WHAT SECONDS RECORDS CEILING: CPU per record next to the
# ceiling's (all cores busy at the ceiling rate: cores / ceiling each).
cpu_line() {
  awk -v w="$1" -v s="$2" -v n="$3" -v c="$4" -v k="$cores" 'BEGIN {
    u = s / n * 1e6; b = k / c * 1e6
    printf "%s: %.0f us CPU per record (ceiling %.0f us: ratio %.2f)\n", w, u, b, b / u }'
}
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

echo "== 1. crypto ceiling (openssl speed, $cores cores)"
speed=$(openssl speed -seconds 2 ed25519 ecdhx25519 2>/dev/null </dev/null)
sign=$(awk '/EdDSA \(Ed25519\)/ {print $(NF-1)}' <<<"$speed")
verify=$(awk '/EdDSA \(Ed25519\)/ {print $NF}' <<<"$speed")
x25519=$(awk '/ecdh \(X25519\)/ {print $NF}' <<<"$speed")
issue_ceiling=$(awk -v s="$sign" -v x="$x25519" -v c="$cores" 'BEGIN {printf "%.0f", c / (1/s + 2/x)}')
recv_ceiling=$(awk -v v="$verify" -v x="$x25519" -v c="$cores" 'BEGIN {printf "%.0f", c / (1/v + 1/x)}')
echo "Ed25519 sign $sign/s, verify $verify/s; X25519 $x25519/s (one core)"
echo "issue ceiling   $issue_ceiling records/s (all cores)"
echo "receive ceiling $recv_ceiling records/s (all cores)"

for n in tixly.example fillmore.example; do
  role=issuer; [ "$n" = tixly.example ] || role=audience
  "$ctl" init --name "$n" --role "$role" --data "$work/$n" \
    --peer-addr "127.0.0.1:$(free_port)" --api-addr "127.0.0.1:$(free_port)" >/dev/null
done
start() {
  rm -f "$work/$1/ports.json"
  "$permitd" --config "$work/$1/permit.conf" --log-level warn 2>>"$work/$1.log" &
  eval "pid_${1%%.*}=$!"; pids+=($!)
  for _ in $(seq 400); do [ -s "$work/$1/ports.json" ] && return; sleep 0.05; done
  echo "$1 did not start"; exit 1
}
start tixly.example; start fillmore.example
for n in tixly.example fillmore.example; do "$ctl" card --data "$work/$n" >"$work/$n.card"; done
"$ctl" peer add "$work/fillmore.example.card" --data "$work/tixly.example" >/dev/null
"$ctl" peer add "$work/tixly.example.card" --data "$work/fillmore.example" >/dev/null
echo "Bench list." >"$work/notice"
"$ctl" list define --data "$work/fillmore.example" --id news --title News --notice-file "$work/notice" >/dev/null
until "$ctl" offers --data "$work/tixly.example" --venue fillmore.example >/dev/null 2>&1; do sleep 0.1; done
api=127.0.0.1:$(sed -E 's/.*"api": ([0-9]+).*/\1/' "$work/tixly.example/ports.json")
# The venue stays down while the reseller is measured: its sync would
# compete for the same two cores.  It comes back for step 4.
kill -TERM "$pid_fillmore"; wait "$pid_fillmore" 2>/dev/null || true
pids=("$pid_tixly")

echo "== 2. durable RecordOptIn throughput, 64 in flight"
perf_start "$pid_tixly" issue
c0=$(cpu_s "$pid_tixly")
out=$("$bdir"/bench_optin "$api" fillmore.example news 1 20000 64 0 warm)
c1=$(cpu_s "$pid_tixly")
perf_stop
echo "$out"
rate=$(sed -nE 's/.* s, ([0-9]+) calls\/s.*/\1/p' <<<"$out")
awk -v r="$rate" -v c="$issue_ceiling" 'BEGIN {printf "issue rate / ceiling: %.2f\n", r / c}'
# Less sensitive than the rate to what else runs on the machine (the load
# generator, other processes): what one record costs the reseller.
cpu_line "reseller" "$(awk -v a="$c0" -v b="$c1" 'BEGIN {print b - a}')" 20000 "$issue_ceiling"

echo "== 3. latency at half that rate"
half=$((rate / 2))
"$bdir"/bench_optin "$api" fillmore.example news 1 $((half * 10)) 64 "$half" half

echo "== 4. a venue catching up on $records records"
have=$(( 20000 + half * 10 ))
if [ "$records" -gt "$have" ]; then
  "$bdir"/bench_optin "$api" fillmore.example news 1 $((records - have)) 64 0 bulk >/dev/null
fi
total=$("$ctl" peer list --data "$work/tixly.example" | awk '/^fillmore/ {print $4}')
start fillmore.example
perf_start "$pid_fillmore" sync
v0=$(cpu_s "$pid_fillmore"); r0=$(cpu_s "$pid_tixly")
peak=0; t0=$(date +%s.%N)
while :; do
  rss=$(awk '/VmRSS/ {print $2}' "/proc/$pid_fillmore/status")
  [ "$rss" -gt "$peak" ] && peak=$rss
  got=$("$ctl" peer list --data "$work/fillmore.example" | awk '/^tixly/ {print $5}')
  [ "${got:-0}" -ge "$total" ] && break
  sleep 0.5
done
t1=$(date +%s.%N)
v1=$(cpu_s "$pid_fillmore"); r1=$(cpu_s "$pid_tixly")
perf_stop
sync_rate=$(awk -v a="$t0" -v b="$t1" -v n="$total" 'BEGIN {printf "%.0f", n / (b - a)}')
echo "caught up on $total records in $(awk -v a="$t0" -v b="$t1" 'BEGIN {printf "%.1f", b - a}') s: $sync_rate records/s"
awk -v r="$sync_rate" -v c="$recv_ceiling" 'BEGIN {printf "sync rate / receive ceiling: %.2f\n", r / c}'
cpu_line "venue" "$(awk -v a="$v0" -v b="$v1" 'BEGIN {print b - a}')" "$total" "$recv_ceiling"
awk -v a="$r0" -v b="$r1" -v n="$total" 'BEGIN {
  printf "reseller serving the pull: %.0f us CPU per record\n", (b - a) / n * 1e6 }'
echo "venue peak RSS during the sync: $((peak / 1024)) MiB"

echo "== 5. disk bytes per record after compaction"
kill -TERM "${pids[@]}"; wait 2>/dev/null || true; pids=()
for n in tixly.example fillmore.example; do
  "$ctl" compact --data "$work/$n" >/dev/null
  bytes=$(du -sb "$work/$n/db" | cut -f1)
  echo "$n: $bytes bytes, $((bytes / total)) bytes per record"
done
