#!/usr/bin/env bash
# Transport benchmark, rerunnable: in one run, h2load drives
#   (a) permitd's grpc.health.v1.Health/Check over h2c, and
#   (b) Debian's nghttpd serving a small static file over h2c,
# with the same parameters, and prints both request rates, their ratio and
# permitd's peak RSS.  Every request is bounded (-n); nothing runs on.
#   tests/bench/run-h2-bench.sh [REQUESTS] [CLIENTS] [STREAMS]
set -euo pipefail
cd "$(dirname "$0")/../.."
n=${1:-400000}; c=${2:-32}; m=${3:-64}
bash deploy/install-deps.sh test >/dev/null
command -v nghttpd >/dev/null || {
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q nghttp2-server >/dev/null; }
cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build -j "$(nproc)" --target permitd >/dev/null

tmp=$(mktemp -d)
cleanup() { kill "$node" "$ngd" 2>/dev/null || true; rm -rf "$tmp"; }
trap cleanup EXIT

build/permitd --data "$tmp/node" --peer-listen 127.0.0.1:0 \
  --api-listen 127.0.0.1:0 --log-level warn 2>"$tmp/node.log" &
node=$!
for _ in $(seq 200); do [ -s "$tmp/node/ports.json" ] && break; sleep 0.05; done
api=$(sed -E 's/.*"api": ([0-9]+).*/\1/' "$tmp/node/ports.json")

# nghttpd has no port 0: take a free one from the kernel.
ngport=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
mkdir -p "$tmp/www"
printf '\x00\x00\x00\x00\x02\x08\x01' >"$tmp/www/check"   # same 7-byte body
nghttpd --no-tls -d "$tmp/www" "$ngport" >/dev/null 2>&1 &
ngd=$!
for _ in $(seq 200); do
  curl -sf --http2-prior-knowledge "http://127.0.0.1:$ngport/check" -o /dev/null && break
  sleep 0.05
done

printf '\x00\x00\x00\x00\x00' >"$tmp/req"
rate() { sed -nE 's/.*finished in .*, ([0-9.]+) req\/s.*/\1/p'; }
h2() { h2load -n "$n" -c "$c" -m "$m" -t 1 "$@" 2>&1; }

h2 -d "$tmp/req" -H 'content-type: application/grpc' -H 'te: trailers' \
  "http://127.0.0.1:$api/grpc.health.v1.Health/Check" >"$tmp/node.out"
h2 "http://127.0.0.1:$ngport/check" >"$tmp/ngd.out"
grep -q " 0 failed, 0 errored" "$tmp/node.out" || { cat "$tmp/node.out"; exit 1; }
node_rate=$(rate <"$tmp/node.out"); ngd_rate=$(rate <"$tmp/ngd.out")
rss=$(awk '/VmHWM/ {print $2}' "/proc/$node/status")
ok=$(curl -s --http2-prior-knowledge "http://127.0.0.1:$api/metrics" |
  sed -nE 's/.*Health\/Check",code="OK"\} ([0-9]+)/\1/p')

echo "h2load -n $n -c $c -m $m -t 1 (one h2load thread, 2-core machine)"
echo "permitd Health/Check (h2c)   $node_rate req/s   ($ok answered OK)"
echo "nghttpd static file (h2c)    $ngd_rate req/s"
awk -v a="$node_rate" -v b="$ngd_rate" 'BEGIN {printf "ratio permitd/nghttpd       %.2f\n", a / b}'
echo "permitd peak RSS             $((rss / 1024)) MiB"
