#!/usr/bin/env bash
# Withdrawal propagation, rerunnable: a reseller and a venue on 127.0.0.1;
# N buyers (default 1,000) opt in, then each withdraws, one at a time,
# through the consent centre's Buyer/Withdraw (the job the page's button
# runs), and the time from the call to the venue's WatchContacts
# "unsubscribed" change is measured.  The baseline measured in the same
# run is the opt-in's own propagation (RecordOptIn to "subscribed").
#   tests/bench/run-withdrawal-bench.sh [N]
# Environment: PERMIT_BUILD_DIR (default build/).
set -euo pipefail
cd "$(dirname "$0")/../.."
n=${1:-1000}
bdir=${PERMIT_BUILD_DIR:-build}
bash deploy/install-deps.sh test >/dev/null
cmake -S . -B "$bdir" -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build "$bdir" -j "$(nproc)" >/dev/null
permitd=$bdir/permitd; ctl=$bdir/permitctl
work=$(mktemp -d "${TMPDIR:-/var/tmp}/permit-wbench-XXXXXX")
pids=()
cleanup() { kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
port() { /usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
start() { # NAME
  "$permitd" --config "$work/$1/permit.conf" 2>"$work/$1.log" &
  pids+=($!)
  local deadline=$((SECONDS + 30))
  until [ -s "$work/$1/ports.json" ]; do
    [ $SECONDS -lt $deadline ] || { echo "$1 did not start" >&2; tail "$work/$1.log" >&2; exit 1; }
    sleep 0.05
  done
}
"$ctl" init --name tixly.example --role issuer --data "$work/tixly.example" \
  --peer-addr "127.0.0.1:$(port)" --api-addr "127.0.0.1:$(port)" \
  --public-addr "127.0.0.1:$(port)" >/dev/null
"$ctl" init --name fillmore.example --role audience --data "$work/fillmore.example" \
  --peer-addr "127.0.0.1:$(port)" --api-addr "127.0.0.1:$(port)" >/dev/null
start tixly.example; start fillmore.example
"$ctl" card --data "$work/tixly.example" >"$work/t.card"
"$ctl" card --data "$work/fillmore.example" >"$work/f.card"
"$ctl" peer add "$work/f.card" --data "$work/tixly.example" >/dev/null
"$ctl" peer add "$work/t.card" --data "$work/fillmore.example" >/dev/null
echo "Send me news from The Fillmore." >"$work/notice.txt"
"$ctl" list define --data "$work/fillmore.example" --id newsletter --title News \
  --notice-file "$work/notice.txt" >/dev/null
deadline=$((SECONDS + 30))
until "$ctl" offers --data "$work/tixly.example" --venue fillmore.example 2>/dev/null | grep -q newsletter; do
  [ $SECONDS -lt $deadline ] || { echo "no catalog" >&2; exit 1; }
  sleep 0.1
done
mkdir -p "$work/py"
protoc -I proto --python_out="$work/py" proto/permit/v1/permit.proto proto/permit/v1/service.proto
api_t=$(/usr/bin/python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["api"])' "$work/tixly.example/ports.json")
api_f=$(/usr/bin/python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["api"])' "$work/fillmore.example/ports.json")
PYTHONPATH="$work/py" /usr/bin/python3 tests/bench/bench_withdrawal.py \
  --reseller "127.0.0.1:$api_t" --venue "127.0.0.1:$api_f" --count "$n"
