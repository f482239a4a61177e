#!/usr/bin/env bash
# The open-file limit (issue 6, item 5): permitd runs with a soft and hard
# limit of 128 descriptors and a client opens 300 connections.  The node
# must not crash, must not spin on accept() (CPU stays low), must log the
# condition a bounded number of times, and once the connections close a
# new client is served.
source "$(dirname "$0")/lib.sh"
: "${PERMITD:?}" "${PERMITCTL:?}"
command -v prlimit >/dev/null || { echo "skip: no prlimit"; exit 0; }
"$PERMITCTL" init --name tixly.example --role issuer --data "$tmp/n" \
  --peer-addr 127.0.0.1:0 --api-addr 127.0.0.1:0 >/dev/null
prlimit --nofile=128:128 "$PERMITD" --config "$tmp/n/permit.conf" --workers 2 \
  2>"$tmp/n.log" &
pid=$!
deadline=$((SECONDS + 30))
until [ -s "$tmp/n/ports.json" ]; do
  [ $SECONDS -lt $deadline ] || fail "the node did not start: $(tail -3 "$tmp/n.log")"
  sleep 0.05
done
api=$(/usr/bin/python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["api"])' "$tmp/n/ports.json")
health() {
  curl -s --max-time 5 --http2-prior-knowledge -o /dev/null -w '%{http_code}' \
    "http://127.0.0.1:$api/metrics"
}
[ "$(health)" = 200 ] || fail "no answer before the flood"
ticks() { awk '{print $14 + $15}' "/proc/$pid/stat"; }

# Hold 300 connections until told to let go.
/usr/bin/python3 - "$api" "$tmp" <<'PY' &
import os, socket, sys, time
port, tmp = int(sys.argv[1]), sys.argv[2]
socks = []
for _ in range(300):
    try:
        socks.append(socket.create_connection(("127.0.0.1", port), timeout=2))
    except OSError:
        break
open(os.path.join(tmp, "held"), "w").write(str(len(socks)))
end = time.monotonic() + 60
while not os.path.exists(os.path.join(tmp, "release")) and time.monotonic() < end:
    time.sleep(0.05)
for s in socks:
    s.close()
PY
holder=$!
deadline=$((SECONDS + 30))
until [ -s "$tmp/held" ]; do
  [ $SECONDS -lt $deadline ] || fail "the client did not connect"
  sleep 0.05
done
# Past the limit the kernel queues further connections; the node cannot
# accept them.  Measure its CPU over a second of that.
t1=$(ticks)
start_ns=$(date +%s%N)
until [ $(( $(date +%s%N) - start_ns )) -ge 1000000000 ]; do sleep 0.1; done
t2=$(ticks)
hz=$(getconf CLK_TCK)
cpu_pct=$(( (t2 - t1) * 100 / hz ))
kill -0 $pid || fail "the node died at the open-file limit"
[ "$cpu_pct" -lt 30 ] || fail "the node spins at the open-file limit: ${cpu_pct}% CPU"
ok "$(cat "$tmp/held") connections held against a limit of 128 descriptors: node up, ${cpu_pct}% CPU"
touch "$tmp/release"
wait_exit $holder 30
deadline=$((SECONDS + 30))
until [ "$(health)" = 200 ]; do
  [ $SECONDS -lt $deadline ] || fail "no answer after the connections closed"
  sleep 0.1
done
lines=$(grep -c 'accept' "$tmp/n.log" || true)
[ "$lines" -lt 100 ] || fail "the open-file limit flooded the log: $lines lines"
grep -q '"event":"server.accept_failed"' "$tmp/n.log" || fail "the condition was not logged: $(tail -3 "$tmp/n.log")"
ok "connections closed: a new client is served; the condition was logged $lines times ($(grep -o '"msg":"[^"]*' "$tmp/n.log" | grep -i 'open files' | head -1 | cut -c8-140))"
stop_node $pid
ok "the node stopped cleanly"
echo "$pass_count passed, 0 failed"
