#!/usr/bin/env bash
# The same back-pressure scenario on permitd itself: a venue pulls a
# reseller's log of several megabytes with Peer/Pull (follow mode), reads
# a little, then stops reading for 10 s.  The reseller's memory stays flat
# (flow control stops the Pull producer) and it keeps answering other
# clients meanwhile.  The venue's client is Python grpcio with the venue's
# own key and certificate.
source "$(dirname "$0")/lib.sh"
: "${PERMITD:?}" "${PERMITCTL:?}" "${TEST_BIN_DIR:?}"
free_port() {
  /usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}
for n in tixly.example fillmore.example; do
  role=issuer; [ "$n" = tixly.example ] || role=audience
  "$PERMITCTL" init --name "$n" --role "$role" --data "$tmp/$n" \
    --peer-addr "127.0.0.1:$(free_port)" --api-addr "127.0.0.1:$(free_port)" >/dev/null
done
"$PERMITD" --config "$tmp/tixly.example/permit.conf" --workers 2 2>"$tmp/t.log" &
reseller=$!
"$PERMITD" --config "$tmp/fillmore.example/permit.conf" --workers 1 2>"$tmp/f.log" &
venue=$!
wait_for '"event":"node.ready"' "$tmp/t.log" || fail "reseller did not start"
wait_for '"event":"node.ready"' "$tmp/f.log" || fail "venue did not start"
for n in tixly.example fillmore.example; do "$PERMITCTL" card --data "$tmp/$n" >"$tmp/$n.card"; done
"$PERMITCTL" peer add "$tmp/fillmore.example.card" --data "$tmp/tixly.example" >/dev/null
"$PERMITCTL" peer add "$tmp/tixly.example.card" --data "$tmp/fillmore.example" >/dev/null
echo "News." >"$tmp/notice"
"$PERMITCTL" list define --data "$tmp/fillmore.example" --id news --title News \
  --notice-file "$tmp/notice" >/dev/null
deadline=$((SECONDS + 30))
until "$PERMITCTL" offers --data "$tmp/tixly.example" --venue fillmore.example 2>/dev/null | grep -q news; do
  [ $SECONDS -lt $deadline ] || fail "no catalog at the reseller"
  sleep 0.1
done
# The venue's own sync would drain the log: stop the venue first.
stop_node "$venue"
api="127.0.0.1:$(sed -E 's/.*"api": ([0-9]+).*/\1/' "$tmp/tixly.example/ports.json")"
count=8000
[ "${PERMIT_SANITIZE:-OFF}" = ON ] && count=3000
"$TEST_BIN_DIR/bench_optin" "$api" fillmore.example news 1 "$count" 64 >"$tmp/load" ||
  fail "loading the log: $(cat "$tmp/load")"
ok "the reseller's log for fillmore holds $count signed opt-ins"
protoc --python_out="$tmp" -I "$PERMIT_SRC/proto/grpc/health/v1" health.proto

/usr/bin/python3 - "$tmp" "$reseller" "$count" <<'PY'
import json, sys, time
sys.path.insert(0, sys.argv[1])
import grpc, health_pb2
tmp, pid, count = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
ports = json.load(open(f"{tmp}/tixly.example/ports.json"))

def rss_kib():
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1])

creds = grpc.ssl_channel_credentials(
    root_certificates=open(f"{tmp}/tixly.example/node.crt", "rb").read(),
    private_key=open(f"{tmp}/fillmore.example/keys/identity.key", "rb").read(),
    certificate_chain=open(f"{tmp}/fillmore.example/node.crt", "rb").read())
ch = grpc.secure_channel(f"127.0.0.1:{ports['peer']}", creds,
                         options=[("grpc.ssl_target_name_override", "tixly.example")])
pull = ch.unary_stream("/permit.v1.Peer/Pull", request_serializer=lambda b: b,
                       response_deserializer=lambda b: b)
a = b"fillmore.example"
req = bytes([0x0a, len(a)]) + a + bytes([0x18, 1])  # audience, follow = true
stream = pull(req)
got = sum(len(next(stream)) for _ in range(200))
print(f"read 200 items ({got // 1024} KiB) of about {count}, then stop reading for 10 s")

other = grpc.insecure_channel(f"127.0.0.1:{ports['api']}")
check = other.unary_unary("/grpc.health.v1.Health/Check",
    request_serializer=health_pb2.HealthCheckRequest.SerializeToString,
    response_deserializer=health_pb2.HealthCheckResponse.FromString)
samples, answered, failed = [], 0, 0
end = time.monotonic() + 10
while time.monotonic() < end:            # the scenario: 10 s not reading
    try:
        answered += check(health_pb2.HealthCheckRequest(), timeout=2).status == 1
    except grpc.RpcError:
        failed += 1
    samples.append(rss_kib())
    time.sleep(0.05)
base = samples[len(samples) // 4]
growth = max(samples[len(samples) // 4:]) - base
print(f"reseller RSS {samples[0]} -> {samples[-1]} KiB (max {max(samples)}), "
      f"growth after warm-up {growth} KiB; {answered} checks answered, {failed} failed")
rest = 0
for item in stream:                      # ...then read the rest: every
    rest += 1                            # entry (and a few checkpoints)
    if rest >= count - 200:
        break
stream.cancel()
print(f"read {rest} more items after the pause")
ok = failed == 0 and answered > 50 and growth < 4096 and rest >= count - 200
sys.exit(0 if ok else 1)
PY
ok "a Pull client that stops reading: flat reseller memory, others served"
stop_node "$reseller"
ok "the reseller stopped cleanly"
echo "$pass_count passed, 0 failed"
