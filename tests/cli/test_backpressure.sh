#!/usr/bin/env bash
# A streaming client that stops reading for 10 s: the server's memory
# stays flat (HTTP/2 flow control stops the producer) and another client
# keeps getting answers meanwhile.  The client is Python grpcio.
source "$(dirname "$0")/lib.sh"
: "${TEST_BIN_DIR:?}" "${PERMIT_SRC:?}"
command -v /usr/bin/python3 >/dev/null || fail "no /usr/bin/python3"

"$TEST_BIN_DIR/permit-testserver" "$tmp/port" 2>"$tmp/server.log" &
server=$!
wait_for . "$tmp/port" || fail "test server did not start"
port=$(cat "$tmp/port")
protoc --python_out="$tmp" -I "$PERMIT_SRC/proto/grpc/health/v1" health.proto

/usr/bin/python3 - "$port" "$server" "$tmp" <<'PY'
import sys, threading, time
sys.path.insert(0, sys.argv[3])
import grpc, health_pb2
port, pid = sys.argv[1], int(sys.argv[2])

def rss_kib():
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])

ident = lambda b: b
slow = grpc.insecure_channel("127.0.0.1:" + port)
fire = slow.unary_stream("/permit.test.Fire/Stream",
                         request_serializer=ident, response_deserializer=ident)
stream = fire(b"")
got = sum(len(next(stream)) for _ in range(2000))   # read a while...
print(f"read {got // 1024} KiB, then stop reading for 10 s")

other = grpc.insecure_channel("127.0.0.1:" + port)
check = other.unary_unary("/grpc.health.v1.Health/Check",
    request_serializer=health_pb2.HealthCheckRequest.SerializeToString,
    response_deserializer=health_pb2.HealthCheckResponse.FromString)
samples, answered, failed = [], 0, 0
end = time.monotonic() + 10
while time.monotonic() < end:            # the scenario: 10 s not reading
    try:
        ok = check(health_pb2.HealthCheckRequest(), timeout=2).status == 1
        answered += ok
        failed += not ok
    except grpc.RpcError:
        failed += 1
    samples.append(rss_kib())
    time.sleep(0.05)
growth = max(samples[len(samples) // 4:]) - samples[len(samples) // 4]
print(f"server RSS {samples[0]} -> {samples[-1]} KiB (max {max(samples)}), "
      f"growth after warm-up {growth} KiB; {answered} checks answered, "
      f"{failed} failed")
more = sum(len(next(stream)) for _ in range(2000))   # ...and read again
stream.cancel()
ok = failed == 0 and answered > 50 and growth < 2048 and more > 0
print("ok" if ok else "FAILED")
sys.exit(0 if ok else 1)
PY
ok "paused streaming client: flat server memory, other client served"
kill -TERM "$server"
wait_exit "$server"
[ "$exit_code" = 0 ] || fail "test server exit $exit_code"
ok "test server stopped cleanly"
echo "$pass_count passed, 0 failed"
