#!/usr/bin/env bash
# Interoperability with Python's grpcio (Debian's python3-grpcio): Check
# over h2c and over mutual TLS with a pinned client certificate, every
# error status the server gives, reflection v1 and v1alpha, the bearer
# token, an unpinned client certificate refused, and Watch across a node
# shutdown.  The client is interop/python/interop_client.py; its message
# classes are generated here with protoc and never committed.
source "$(dirname "$0")/lib.sh"
: "${PERMIT_SRC:?}"
source "$PERMIT_SRC/interop/lib.sh"

py=/usr/bin/python3
need_cmd protoc protobuf-compiler
need_cmd curl curl
need_cmd openssl openssl
[ -x "$py" ] || fail "$py is missing: install Debian's python3"
"$py" -c 'import grpc, google.protobuf' 2>"$tmp/import.err" ||
  fail "Debian's python3-grpcio and python3-protobuf are needed" \
    "(bash deploy/install-deps.sh test): $(cat "$tmp/import.err")"

# Message classes.  Each proto is compiled from its own directory: an
# include path at proto/ would make a Python package named grpc that
# hides grpcio.
mkdir -p "$tmp/py/health" "$tmp/py/reflection"
protoc --python_out="$tmp/py/health" -I "$PERMIT_SRC/proto/grpc/health/v1" \
  health.proto || fail "protoc health.proto"
protoc --python_out="$tmp/py/reflection" \
  -I "$PERMIT_SRC/proto/grpc/reflection/v1" reflection.proto ||
  fail "protoc reflection.proto"
export PYTHONPATH="$tmp/py/health:$tmp/py/reflection"
export PYTHONDONTWRITEBYTECODE=1
client=("$py" "$PERMIT_SRC/interop/python/interop_client.py")
ok "generated health_pb2 and reflection_pb2 with $(protoc --version)"

make_client_cert probe
make_client_cert rogue

# Node 1: h2c local API, and the probe's key pinned on the peer listener.
start_node n1 --trust-cert "probe.example=$tmp/probe.crt"
n1_pid=$node_pid n1_api=$node_api n1_peer=$node_peer n1_cert=$node_cert

run_checks calls "${client[@]}" calls --api "$n1_api" --peer "$n1_peer" \
  --node-cert "$n1_cert" --client-cert "$tmp/probe.crt" \
  --client-key "$tmp/probe.key" --rogue-cert "$tmp/rogue.crt" \
  --rogue-key "$tmp/rogue.key"

# A key id is the first 8 bytes of SHA-256 over the raw Ed25519 key (the
# last 32 bytes of its DER SubjectPublicKeyInfo), in hex.
rogue_id=$(openssl pkey -in "$tmp/rogue.key" -pubout -outform DER |
  tail -c 32 | sha256sum | cut -c1-16)
wait_for '"event":"tls.unpinned_peer"' "$tmp/n1.log" 10 ||
  fail "no tls.unpinned_peer in the node's log"
grep '"event":"tls.unpinned_peer"' "$tmp/n1.log" | grep -q "$rogue_id" ||
  fail "tls.unpinned_peer does not name key $rogue_id: $(cat "$tmp/n1.log")"
ok "the node logged tls.unpinned_peer for the rogue key $rogue_id"

# Node 2: the local API over TLS with a bearer token.
token="interop-token-$RANDOM$RANDOM-0123456789"
start_node n2 --api-tls --api-token "$token"
n2_pid=$node_pid
run_checks auth "${client[@]}" auth --api "$node_api" \
  --node-cert "$node_cert" --token "$token"
# /metrics on that listener wants the token too.
code=$(curl -s --cacert "$node_cert" --resolve "node.example:$node_api:127.0.0.1" \
  -o /dev/null -w '%{http_code}' "https://node.example:$node_api/metrics")
[ "$code" = 401 ] || fail "/metrics without the token: HTTP $code"
code=$(curl -s --cacert "$node_cert" --resolve "node.example:$node_api:127.0.0.1" \
  -H "authorization: Bearer $token" -o /dev/null -w '%{http_code}' \
  "https://node.example:$node_api/metrics")
[ "$code" = 200 ] || fail "/metrics with the token: HTTP $code"
ok "/metrics needs the bearer token too (401 without, 200 with)"
shutdown_node "$n2_pid" n2
ok "the token node stopped cleanly"

# Watch across a shutdown: SERVING first; at SIGTERM the node sends
# NOT_SERVING and ends the stream with UNAVAILABLE.
watch_across_shutdown "$n1_pid" n1 "${client[@]}" watch --api "$n1_api"

echo "$pass_count passed, 0 failed"
