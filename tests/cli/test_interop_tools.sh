#!/usr/bin/env bash
# The node seen by stock HTTP/2 and TLS tools: nghttp and curl fetch
# /metrics over h2c; a non-gRPC POST gets 415; nghttp's frame trace shows
# that early gRPC errors are Trailers-Only (one HEADERS frame with
# END_STREAM) with a percent-encoded grpc-message; a bounded h2load run of
# Health/Check has no failure, and the node's counters show every call
# ended OK; openssl s_client is refused without a pinned certificate.
source "$(dirname "$0")/lib.sh"
: "${PERMIT_SRC:?}"
source "$PERMIT_SRC/interop/lib.sh"

need_cmd nghttp nghttp2-client
need_cmd h2load nghttp2-client
need_cmd curl curl
need_cmd openssl openssl

make_client_cert probe
make_client_cert rogue
start_node n1 --trust-cert "probe.example=$tmp/probe.crt"
api=$node_api peer=$node_peer n1_pid=$node_pid
base="http://127.0.0.1:$api"

# ---- /metrics over h2c (prior knowledge) ----
nghttp -v "$base/metrics" >"$tmp/nghttp-metrics.out" 2>&1 ||
  fail "nghttp GET /metrics: $(tail -n 20 "$tmp/nghttp-metrics.out")"
grep -q 'recv (stream_id=[0-9]*) :status: 200$' "$tmp/nghttp-metrics.out" ||
  fail "nghttp GET /metrics: no status 200: $(cat "$tmp/nghttp-metrics.out")"
grep -q '^permit_connections_accepted_total{listener="local"} [0-9]' \
  "$tmp/nghttp-metrics.out" || fail "nghttp: no permit_connections_accepted_total"
ok "nghttp GET /metrics over h2c: 200 with permit_connections_accepted_total"

out=$(curl -sS --max-time 10 --http2-prior-knowledge -o "$tmp/curl-metrics" \
  -w '%{http_code} %{http_version} %{content_type}' "$base/metrics")
[ "${out%% *}" = 200 ] || fail "curl GET /metrics: $out"
case "$out" in
  "200 2 text/plain"*) ;;
  *) fail "curl GET /metrics: status, version, type: $out" ;;
esac
grep -q '^permit_connections_accepted_total{listener="local"} [0-9]' \
  "$tmp/curl-metrics" || fail "curl: no permit_connections_accepted_total"
ok "curl --http2-prior-knowledge GET /metrics: $out"

# The 415 is decided on the headers, before the body has arrived; the
# server then drops the small body instead of resetting the stream, so
# curl (which reports a reset after a full answer as error 92) is happy.
for i in 1 2 3 4 5 6 7 8 9 10; do
  code=$(curl -sS --max-time 10 --http2-prior-knowledge -o "$tmp/415" \
    -w '%{http_code}' -X POST -H 'content-type: application/json' \
    --data '{"service":""}' "$base/grpc.health.v1.Health/Check") ||
    fail "curl POST with a body failed (try $i)"
  [ "$code" = 415 ] || fail "POST with content-type application/json: $code"
done
ok "curl POST of a JSON body, 10 times: HTTP 415 ($(cat "$tmp/415"))"
# gRPC with another codec than protobuf is not served either.
code=$(curl -sS --max-time 10 --http2-prior-knowledge -o "$tmp/415j" \
  -w '%{http_code}' -X POST -H 'content-type: application/grpc+json' \
  -H 'te: trailers' --data-binary @/dev/null "$base/grpc.health.v1.Health/Check") ||
  fail "curl POST application/grpc+json failed"
[ "$code" = 415 ] && grep -q "protobuf only" "$tmp/415j" ||
  fail "POST with content-type application/grpc+json: $code $(cat "$tmp/415j")"
ok "application/grpc+json: HTTP 415 ($(cat "$tmp/415j"))"

printf '{"service":""}' >"$tmp/body.json"
nghttp -v -H ':method: POST' -H 'content-type: application/json' \
  -d "$tmp/body.json" "$base/grpc.health.v1.Health/Check" \
  >"$tmp/nghttp-415.out" 2>&1 || fail "nghttp POST: $(cat "$tmp/nghttp-415.out")"
grep -q 'recv (stream_id=[0-9]*) :status: 415$' "$tmp/nghttp-415.out" ||
  fail "nghttp POST application/json: $(cat "$tmp/nghttp-415.out")"
! grep -q 'grpc-status' "$tmp/nghttp-415.out" || fail "a 415 with grpc-status"
ok "nghttp POST of a JSON body with content-type application/json: HTTP 415"

code=$(curl -sS --max-time 10 --http2-prior-knowledge -o /dev/null \
  -w '%{http_code}' "$base/no-such-page")
[ "$code" = 404 ] || fail "GET /no-such-page: $code"
ok "curl GET of an unknown path: HTTP 404"

# ---- Trailers-Only, as nghttp sees the frames ----
# grpc_call FILE PATH BODY: one gRPC POST through nghttp -v, trace in FILE.
grpc_call() {
  nghttp -v -H ':method: POST' -H 'content-type: application/grpc' \
    -H 'te: trailers' -d "$3" "$base$2" >"$1" 2>&1 ||
    fail "nghttp POST $2: $(tail -n 20 "$1")"
}
# trailers_only FILE: the response is one HEADERS frame ending the stream,
# no DATA, no second HEADERS.
trailers_only() {
  local sid
  sid=$(sed -n 's/.*send HEADERS frame <.*stream_id=\([0-9]*\)>.*/\1/p' "$1")
  [ -n "$sid" ] || fail "no request HEADERS in $1"
  local headers data
  headers=$(grep -c "recv HEADERS frame <.*stream_id=$sid>" "$1" || true)
  data=$(grep -c "recv DATA frame <.*stream_id=$sid>" "$1" || true)
  [ "$headers" = 1 ] && [ "$data" = 0 ] ||
    fail "$headers HEADERS and $data DATA frames, not Trailers-Only: $(cat "$1")"
  grep -A1 "recv HEADERS frame <.*stream_id=$sid>" "$1" |
    grep -q '; END_STREAM' || fail "the HEADERS frame does not end the stream"
}

printf '\0\0\0\0\0' >"$tmp/empty.grpc"
grpc_call "$tmp/unimpl.out" /grpc.health.v1.Health/NoSuchMethod "$tmp/empty.grpc"
trailers_only "$tmp/unimpl.out"
grep -q 'recv (stream_id=[0-9]*) grpc-status: 12$' "$tmp/unimpl.out" ||
  fail "no grpc-status: 12: $(cat "$tmp/unimpl.out")"
grep -q 'recv (stream_id=[0-9]*) :status: 200$' "$tmp/unimpl.out" ||
  fail "Trailers-Only without :status 200"
ok "UNIMPLEMENTED is Trailers-Only: one HEADERS frame with END_STREAM, grpc-status: 12"

# HealthCheckRequest{service: "café\nx"}: field 1, 7 bytes.
printf '\0\0\0\0\x09\x0a\x07caf\xc3\xa9\x0ax' >"$tmp/notfound.grpc"
grpc_call "$tmp/notfound.out" /grpc.health.v1.Health/Check "$tmp/notfound.grpc"
trailers_only "$tmp/notfound.out"
grep -q 'grpc-status: 5$' "$tmp/notfound.out" || fail "no grpc-status: 5"
grep -qF 'grpc-message: unknown service "caf%C3%A9%0Ax"' "$tmp/notfound.out" ||
  fail "grpc-message not percent-encoded: $(grep grpc-message "$tmp/notfound.out")"
ok 'NOT_FOUND is Trailers-Only with grpc-message: unknown service "caf%C3%A9%0Ax"'

# An answered call is HEADERS, DATA, then trailers (HEADERS + END_STREAM).
grpc_call "$tmp/check.out" /grpc.health.v1.Health/Check "$tmp/empty.grpc"
sid=$(sed -n 's/.*send HEADERS frame <.*stream_id=\([0-9]*\)>.*/\1/p' \
  "$tmp/check.out")
[ "$(grep -c "recv HEADERS frame <.*stream_id=$sid>" "$tmp/check.out")" = 2 ] &&
  grep -q "recv DATA frame <length=7, .*stream_id=$sid>" "$tmp/check.out" &&
  grep -q 'grpc-status: 0$' "$tmp/check.out" ||
  fail "Check OK: not headers, one 7-byte DATA, trailers: $(cat "$tmp/check.out")"
ok "Check OK is HEADERS, a 7-byte DATA frame (SERVING), trailers grpc-status: 0"

# A malformed grpc-timeout is refused before the handler runs.
nghttp -v -H ':method: POST' -H 'content-type: application/grpc' \
  -H 'te: trailers' -H 'grpc-timeout: soon' -d "$tmp/empty.grpc" \
  "$base/grpc.health.v1.Health/Check" >"$tmp/badtimeout.out" 2>&1 ||
  fail "nghttp: $(cat "$tmp/badtimeout.out")"
trailers_only "$tmp/badtimeout.out"
grep -q 'grpc-status: 3$' "$tmp/badtimeout.out" ||
  fail "malformed grpc-timeout: $(grep grpc- "$tmp/badtimeout.out")"
ok "a malformed grpc-timeout is Trailers-Only INVALID_ARGUMENT (grpc-status: 3)"

# The server's own deadline, seen from a client that has none: Watch with
# grpc-timeout 100m streams SERVING, then trailers with grpc-status: 4.
nghttp -v -H ':method: POST' -H 'content-type: application/grpc' \
  -H 'te: trailers' -H 'grpc-timeout: 100m' -d "$tmp/empty.grpc" \
  "$base/grpc.health.v1.Health/Watch" >"$tmp/deadline.out" 2>&1 ||
  fail "nghttp: $(cat "$tmp/deadline.out")"
grep -q 'recv DATA frame <length=7, ' "$tmp/deadline.out" &&
  grep -q 'grpc-status: 4$' "$tmp/deadline.out" &&
  grep -q 'grpc-message: deadline exceeded$' "$tmp/deadline.out" ||
  fail "Watch with grpc-timeout 100m: $(cat "$tmp/deadline.out")"
ok "Watch with grpc-timeout: 100m from nghttp: SERVING, then grpc-status: 4 from the server"

# ---- a bounded h2load run ----
if [ "${PERMIT_SANITIZE:-OFF}" = ON ]; then n=5000; else n=20000; fi
before=$(metrics "$api")
check=/grpc.health.v1.Health/Check
h2load -n "$n" -c 8 -m 16 -d "$tmp/empty.grpc" \
  -H 'content-type: application/grpc' -H 'te: trailers' \
  "$base$check" >"$tmp/h2load.out" 2>&1 ||
  fail "h2load: $(cat "$tmp/h2load.out")"
grep -q "^requests: $n total, $n started, $n done, $n succeeded, 0 failed, 0 errored, 0 timeout" \
  "$tmp/h2load.out" || fail "h2load: $(cat "$tmp/h2load.out")"
grep -q "^status codes: $n 2xx, 0 3xx, 0 4xx, 0 5xx" "$tmp/h2load.out" ||
  fail "h2load status codes: $(grep '^status' "$tmp/h2load.out")"
# h2load sees HTTP status 200 only; each call's grpc-status is in the
# node's counters (a call is counted when its stream closes).
want=$(( $(calls_total "$before" "$check" OK) + n ))
deadline=$((SECONDS + 30))
until after=$(metrics "$api") &&
    [ "$(calls_total "$after" "$check" OK)" -ge "$want" ]; do
  [ $SECONDS -lt $deadline ] || break
  sleep 0.05
done
[ "$(calls_total "$after" "$check" OK)" = "$want" ] ||
  fail "Check OK went $(calls_total "$before" "$check" OK) -> $(calls_total "$after" "$check" OK), expected +$n"
for code in CANCELLED UNKNOWN INVALID_ARGUMENT DEADLINE_EXCEEDED NOT_FOUND \
    ALREADY_EXISTS PERMISSION_DENIED RESOURCE_EXHAUSTED FAILED_PRECONDITION \
    ABORTED OUT_OF_RANGE UNIMPLEMENTED INTERNAL UNAVAILABLE DATA_LOSS \
    UNAUTHENTICATED; do
  [ "$(calls_total "$before" "$check" "$code")" = \
    "$(calls_total "$after" "$check" "$code")" ] ||
    fail "h2load made Check $code calls"
done
ok "h2load -n $n -c 8 -m 16: $(grep '^finished in' "$tmp/h2load.out" |
  cut -d, -f1-2); 0 failed, 0 errored; Check OK +$n and no other code"

# ---- openssl s_client against the peer listener ----
# The client sends the HTTP/2 preface, an empty SETTINGS and a GOAWAY,
# then reads to the end: a pinned client gets the server's SETTINGS and
# the connection closes; others get a TLS alert once the server has seen
# their certificate (TLS 1.3 ends the client's handshake first).
printf 'PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\4\0\0\0\0\0\0\0\10\7\0\0\0\0\0\0\0\0\0\0\0\0\0' \
  >"$tmp/h2bye"
s_client() {
  local who=$1 rc=0
  shift
  timeout 30 openssl s_client -connect "127.0.0.1:$peer" -tls1_3 -alpn h2 \
    -servername node.example -ign_eof "$@" <"$tmp/h2bye" \
    >"$tmp/s_client.$who.out" 2>"$tmp/s_client.$who.err" || rc=$?
  [ "$rc" != 124 ] || fail "openssl s_client ($who) hung"
}
handshakes_failed() {
  metrics "$api" | sed -n 's/^permit_handshakes_failed_total{listener="peer"} //p'
}
# handshakes_failed_reach N: waits until the counter is N (the server
# counts a failure just after sending its alert) and checks it went no
# further.
handshakes_failed_reach() {
  local deadline=$((SECONDS + 10)) v
  until v=$(handshakes_failed) && [ "$v" -ge "$1" ]; do
    [ $SECONDS -lt $deadline ] || break
    sleep 0.05
  done
  [ "$v" = "$1" ] || fail "permit_handshakes_failed_total is $v, expected $1"
}

hf0=$(handshakes_failed)
s_client probe -cert "$tmp/probe.crt" -key "$tmp/probe.key"
! grep -q 'alert' "$tmp/s_client.probe.err" ||
  fail "pinned client refused: $(cat "$tmp/s_client.probe.err")"
grep -q '^ALPN protocol: h2$' "$tmp/s_client.probe.out" || fail "no ALPN h2"
# The server's SETTINGS frame: 18 bytes, type 4, flags 0, stream 0.
LC_ALL=C grep -qaP '\x00\x00\x12\x04\x00\x00\x00\x00\x00' \
  "$tmp/s_client.probe.out" || fail "no server SETTINGS frame for the pinned client"
[ "$(handshakes_failed)" = "$hf0" ] || fail "pinned handshake counted as failed"
ok "openssl s_client with the pinned cert: TLS 1.3, ALPN h2, server SETTINGS received"

s_client rogue -cert "$tmp/rogue.crt" -key "$tmp/rogue.key"
grep -q 'alert bad certificate' "$tmp/s_client.rogue.err" ||
  fail "unpinned client not refused: $(cat "$tmp/s_client.rogue.err")"
! LC_ALL=C grep -qaP '\x00\x00\x12\x04\x00\x00\x00\x00\x00' \
  "$tmp/s_client.rogue.out" || fail "the unpinned client got HTTP/2 frames"
wait_for '"event":"tls.unpinned_peer"' "$tmp/n1.log" 10 ||
  fail "no tls.unpinned_peer logged"
handshakes_failed_reach $((hf0 + 1))
ok "openssl s_client with an unpinned cert: handshake fails (alert bad certificate), tls.unpinned_peer logged"

s_client anonymous
grep -q 'alert certificate required' "$tmp/s_client.anonymous.err" ||
  fail "client without a cert not refused: $(cat "$tmp/s_client.anonymous.err")"
handshakes_failed_reach $((hf0 + 2))
ok "openssl s_client without a client cert: handshake fails (alert certificate required)"

shutdown_node "$n1_pid" n1
ok "node stopped cleanly (exit 0)"

echo "$pass_count passed, 0 failed"
