#!/usr/bin/env bash
# Connection-level limits of permitd: handshake timeout on the TLS
# listener, preface timeout and idle timeout on h2c, the connection cap,
# and an oversized header block.  Each offender is cut off; the node keeps
# answering well-behaved clients.
source "$(dirname "$0")/lib.sh"
: "${PERMITD:?}"

start_node() { # DIR ARGS...; sets $node
  local dir=$1; shift
  "$PERMITD" --data "$dir" --peer-listen 127.0.0.1:0 --api-listen 127.0.0.1:0 \
    --workers 1 "$@" 2>"$dir.log" &
  node=$!
  wait_for '"event":"node.ready"' "$dir.log" || fail "node not ready: $(cat "$dir.log")"
}
port_of() { sed -E "s/.*\"$2\": ([0-9]+).*/\1/" "$1/ports.json"; }
healthy() {
  curl -sf --http2-prior-knowledge "http://127.0.0.1:$1/metrics" -o /dev/null
}

start_node "$tmp/a" --limit handshake-timeout-ms=300 --limit idle-timeout-ms=700
peer=$(port_of "$tmp/a" peer); api=$(port_of "$tmp/a" api)

/usr/bin/python3 - "$peer" "$api" <<'PY'
import socket, sys, time
peer, api = int(sys.argv[1]), int(sys.argv[2])
def closed_within(sock, seconds):
    """Seconds until the server closed |sock|, or None."""
    sock.settimeout(seconds)
    start = time.monotonic()
    try:
        while sock.recv(65536):
            pass
        return time.monotonic() - start
    except socket.timeout:
        return None
# A TLS client that never sends a ClientHello.
s = socket.create_connection(("127.0.0.1", peer))
t = closed_within(s, 5)
assert t is not None and t < 3, f"silent TLS client not cut off ({t})"
print(f"silent TLS client closed after {t:.2f} s")
# An h2c client that never sends the connection preface.
s = socket.create_connection(("127.0.0.1", api))
t = closed_within(s, 5)
assert t is not None and t < 3, f"silent h2c client not cut off ({t})"
print(f"h2c client without preface closed after {t:.2f} s")
# An h2c client that sends the preface and SETTINGS, then idles.
s = socket.create_connection(("127.0.0.1", api))
s.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + bytes([0, 0, 0, 4, 0, 0, 0, 0, 0]))
t = closed_within(s, 5)
assert t is not None and t < 3, f"idle h2c client not cut off ({t})"
print(f"idle h2c connection closed after {t:.2f} s")
PY
ok "handshake, preface and idle timeouts cut silent clients off"
healthy "$api" || fail "node stopped answering"

# An oversized header block resets that stream only.
big=$(head -c 20000 /dev/zero | tr '\0' 'a')
rc=0
curl -s --http2-prior-knowledge -H "x-big: $big" -H 'content-type: application/grpc' \
  --data-binary '' "http://127.0.0.1:$api/grpc.health.v1.Health/Check" \
  -o /dev/null || rc=$?
[ "$rc" != 0 ] || fail "a 20 KB header block was accepted"
healthy "$api" || fail "node stopped answering after a big header block"
ok "a header block over 16 KiB is refused; the node goes on"
stop_node "$node"

start_node "$tmp/b" --limit max-connections=2
api=$(port_of "$tmp/b" api)
/usr/bin/python3 - "$api" <<'PY'
import socket, sys
api = int(sys.argv[1])
keep = [socket.create_connection(("127.0.0.1", api)) for _ in range(2)]
extra = socket.create_connection(("127.0.0.1", api))
extra.settimeout(5)
assert extra.recv(1) == b"", "third connection was not refused"
for s in keep:           # the first two are still open
    s.setblocking(False)
    try:
        assert s.recv(1) != b"", "an accepted connection was closed"
    except BlockingIOError:
        pass
    s.close()
print("third connection refused while two were open")
PY
ok "the connection cap refuses the extra connection"
# Closed connections free their places (the count is not leaked).
for _ in $(seq 50); do healthy "$api" && break; sleep 0.05; done
healthy "$api" || fail "cap not released after clients left"
ok "places are released when clients leave"
stop_node "$node"
ok "both nodes stopped cleanly"
echo "$pass_count passed, 0 failed"
