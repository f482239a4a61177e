#!/usr/bin/env bash
# Malicious HTTP/2 peers (issue 6, item 2): rapid resets, CONTINUATION
# floods, oversized header blocks, a huge declared message, WINDOW_UPDATE
# abuse, handshakes that never finish, thousands of idle connections and
# clients that vanish with a stream open.
# For each, tests/cli/hostile_h2.py (raw frames; replies parsed with
# python3-h2's hyperframe and hpack; a python3-h2 client calling
# Health/Check on its own connection throughout) checks that the node
# stays up, its memory stays bounded, the well-behaved client keeps
# getting answers and the offender is cut off with the right HTTP/2 error
# or gRPC status.  Every attack is bounded in frames, connections and
# seconds.
source "$(dirname "$0")/lib.sh"
: "${PERMITD:?}" "${PERMITCTL:?}" "${PERMIT_SRC:?}"
py=/usr/bin/python3
[ -x "$py" ] || fail "$py is missing: install Debian's python3"
"$py" -c 'import h2, hyperframe, hpack' 2>"$tmp/import.err" ||
  fail "Debian's python3-h2 is needed (bash deploy/install-deps.sh test):" \
    "$(cat "$tmp/import.err")"
command -v openssl >/dev/null || fail "openssl is missing"
driver=("$py" "$PERMIT_SRC/tests/cli/hostile_h2.py")

# Instrumented nodes start and answer several times more slowly.  ASan
# also keeps freed memory in quarantine (256 MiB by default), which would
# swamp the memory checks: the nodes here keep 32 MiB.
if [ "${PERMIT_SANITIZE:-OFF}" = ON ]; then
  ready=120 handshake_ms=1500 idle_ms=4000 handshake_b_ms=3000 ka_ms=2000
  export ASAN_OPTIONS="${ASAN_OPTIONS:+$ASAN_OPTIONS:}quarantine_size_mb=32"
else
  ready=30 handshake_ms=500 idle_ms=2000 handshake_b_ms=1500 ka_ms=1000
fi

start_node() { # NAME PERMITD-ARGS...; sets $node, $api, $peer, $public
  local name=$1; shift
  "$PERMITD" "$@" 2>"$tmp/$name.log" &
  node=$!
  wait_for '"event":"node.ready"' "$tmp/$name.log" "$ready" ||
    fail "node $name not ready: $(cat "$tmp/$name.log")"
  port_of() { sed -E "s/.*\"$1\": ([0-9]+).*/\1/" "$tmp/$name/ports.json"; }
  api=$(port_of api) peer=$(port_of peer) public=$(port_of public)
}
metric() { # PORT NAME LISTENER
  curl -sS --max-time 10 --http2-prior-knowledge \
    "http://127.0.0.1:$1/metrics" |
    awk -v w="$2{listener=\"$3\"}" '$1 == w {print $2}'
}
run() { # SCENARIO ARGS...
  local t0=$SECONDS
  "${driver[@]}" "$@" || fail "scenario $1 (output above)"
  ok "$1 $([[ " $* " == *" --tls "* ]] && echo "(TLS) ")in $((SECONDS - t0)) s"
}

openssl req -x509 -newkey ed25519 -nodes -keyout "$tmp/probe.key" \
  -out "$tmp/probe.crt" -subj "/CN=probe.example" -days 2 \
  2>"$tmp/openssl.err" || fail "openssl: $(cat "$tmp/openssl.err")"

# Node a: a reseller with all three listeners; one worker, so attacker and
# well-behaved client share one event loop (the harder case); a short
# handshake deadline; the probe's key pinned so attacks can also come over
# the peer listener's mutual TLS.
"$PERMITCTL" init --name node.example --role issuer --data "$tmp/a" \
  --peer-addr 127.0.0.1:0 --api-addr 127.0.0.1:0 \
  --public-addr 127.0.0.1:0 >"$tmp/init.out" ||
  fail "permitctl init: $(cat "$tmp/init.out")"
start_node a --config "$tmp/a/permit.conf" --workers 1 \
  --trust-cert "probe.example=$tmp/probe.crt" \
  --limit "handshake-timeout-ms=$handshake_ms"
common=(--pid "$node" --api "$api" --peer "$peer" --public "$public"
        --cert "$tmp/probe.crt" --key "$tmp/probe.key"
        --handshake-ms "$handshake_ms")
run rapid-reset "${common[@]}"
run rapid-reset "${common[@]}" --tls
run continuation-flood "${common[@]}"
run continuation-flood "${common[@]}" --tls
run big-headers "${common[@]}"
run huge-message "${common[@]}"
run window-update-abuse "${common[@]}"
run slow-handshake "${common[@]}"
run public-listener "${common[@]}"

failed=$(metric "$api" permit_handshakes_failed_total peer)
[ "${failed:-0}" -ge 100 ] ||
  fail "permit_handshakes_failed_total{listener=\"peer\"} is ${failed:-none}"
ok "the peer listener counted $failed failed handshakes"
# One log line per offender, not one per frame (a CONTINUATION flood
# once logged each failed read: tens of thousands of lines a second).
lines=$(wc -l <"$tmp/a.log")
resets=$(grep -c '"event":"h2.too_many_resets"' "$tmp/a.log" || true)
[ "$lines" -lt 5000 ] || fail "node a logged $lines lines"
[ "$resets" -gt 0 ] || fail "no h2.too_many_resets in node a's log"
ok "node a logged $lines lines in all ($resets h2.too_many_resets)"
stop_node "$node"
ok "node a stopped cleanly after every attack"

# Node b: a cap of 64 connections, short idle, handshake and keepalive
# deadlines.
start_node b --data "$tmp/b" --name node.example --peer-listen 127.0.0.1:0 \
  --api-listen 127.0.0.1:0 --workers 2 --limit max-connections=64 \
  --limit "idle-timeout-ms=$idle_ms" \
  --limit "handshake-timeout-ms=$handshake_b_ms" \
  --limit "keepalive-ms=$ka_ms" --limit "keepalive-timeout-ms=$ka_ms"
run idle-connections --pid "$node" --api "$api" --max-connections 64 \
  --idle-ms "$idle_ms" --handshake-ms "$handshake_b_ms"
refused=$(metric "$api" permit_connections_refused_total local)
[ "${refused:-0}" -ge 1000 ] ||
  fail "permit_connections_refused_total (local) is ${refused:-none}"
ok "node b counted $refused refused connections"
run silent-client --pid "$node" --api "$api" --keepalive-ms "$ka_ms" \
  --keepalive-timeout-ms "$ka_ms"
grep -q '"event":"conn.keepalive_timeout"' "$tmp/b.log" ||
  fail "no conn.keepalive_timeout in node b's log"
ok "node b logged the keepalive timeout"
stop_node "$node"
ok "node b stopped cleanly"
echo "$pass_count passed, 0 failed"
