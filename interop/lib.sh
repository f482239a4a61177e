# Helpers for the interoperability tests (tests/cli/test_interop_*.sh).
# Sourced after tests/cli/lib.sh, which provides $tmp, ok, fail, wait_for
# and wait_exit.  Not run on its own.

: "${PERMITD:?PERMITD must name the permitd binary}"

# Instrumented (ASan) nodes start and answer more slowly.
if [ "${PERMIT_SANITIZE:-OFF}" = ON ]; then
  node_ready_seconds=120
else
  node_ready_seconds=30
fi

# need_cmd CMD PACKAGE: fails with advice when CMD is not installed.
need_cmd() {
  command -v "$1" >/dev/null 2>&1 ||
    fail "$1 is missing: install Debian's $2 (bash deploy/install-deps.sh test)"
}

# make_client_cert NAME: an Ed25519 self-signed certificate for CN
# NAME.example in $tmp/NAME.crt and $tmp/NAME.key.
make_client_cert() {
  openssl req -x509 -newkey ed25519 -nodes -keyout "$tmp/$1.key" \
    -out "$tmp/$1.crt" -subj "/CN=$1.example" -days 2 2>"$tmp/$1.openssl" ||
    fail "openssl could not make the $1 certificate: $(cat "$tmp/$1.openssl")"
}

# start_node NAME [permitd options...]: starts a node with data in
# $tmp/NAME and its log in $tmp/NAME.log, on kernel-assigned ports of
# 127.0.0.1, and waits until it is ready.  Sets node_pid, node_api,
# node_peer and node_cert.
start_node() {
  local name=$1
  shift
  "$PERMITD" --data "$tmp/$name" --name node.example \
    --peer-listen 127.0.0.1:0 --api-listen 127.0.0.1:0 "$@" \
    2>"$tmp/$name.log" &
  node_pid=$!
  if ! wait_for '"event":"node.ready"' "$tmp/$name.log" "$node_ready_seconds"
  then
    fail "node $name not ready: $(cat "$tmp/$name.log")"
  fi
  local ports
  ports=$(cat "$tmp/$name/ports.json")
  node_api=$(sed -n 's/.*"api": *\([0-9][0-9]*\).*/\1/p' <<<"$ports")
  node_peer=$(sed -n 's/.*"peer": *\([0-9][0-9]*\).*/\1/p' <<<"$ports")
  node_cert="$tmp/$name/node.crt"
  [ -n "$node_api" ] && [ -n "$node_peer" ] ||
    fail "node $name: no ports in ports.json: $ports"
  [ -s "$node_cert" ] || fail "node $name wrote no node.crt"
}

# shutdown_node PID NAME: SIGTERM, then the node must exit 0 (under ASan with
# detect_leaks=1 a leak makes the exit code non-zero) and log node.stopped.
shutdown_node() {
  kill -TERM "$1" 2>/dev/null || true
  wait_exit "$1" 60
  [ "$exit_code" = 0 ] ||
    fail "node $2 exited $exit_code on SIGTERM: $(tail -n 30 "$tmp/$2.log")"
  grep -q '"event":"node.stopped"' "$tmp/$2.log" ||
    fail "node $2 did not log node.stopped"
}

# metrics PORT: the local listener's /metrics text (curl, h2c).
metrics() {
  curl -sS --max-time 10 --http2-prior-knowledge \
    "http://127.0.0.1:$1/metrics"
}

# calls_total METRICS_TEXT METHOD CODE: a permit_grpc_calls_total value
# on the local listener (0 when absent).
calls_total() {
  local want="permit_grpc_calls_total{listener=\"local\",method=\"$2\",code=\"$3\"}"
  awk -v w="$want" '$1 == w {v = $2} END {print v + 0}' <<<"$1"
}

# run_checks LABEL CMD...: runs a check program that prints one "ok: ..."
# or "FAIL: ..." line per check; shows its output, adds its passes to
# pass_count and fails when it failed.
run_checks() {
  local label=$1 out="$tmp/checks-$1.out" rc=0
  shift
  "$@" >"$out" 2>&1 || rc=$?
  cat "$out"
  pass_count=$((pass_count + $(grep -c '^ok:' "$out" || true)))
  ! grep -q '^FAIL:' "$out" || fail "$label: a check failed"
  [ "$rc" = 0 ] || fail "$label: exited $rc"
}

# watch_across_shutdown NODE_PID NODE_NAME CMD...: runs a Watch client
# (CMD prints "watch: first status S" once its stream is up, then one
# "ok:"/"FAIL:" line per check), stops the node with SIGTERM once the
# first status is SERVING, and checks that both the client and the node
# exit 0.
watch_across_shutdown() {
  local pid=$1 name=$2 out="$tmp/watch-$2.out" client_pid
  shift 2
  "$@" >"$out" 2>&1 &
  client_pid=$!
  wait_for '^watch: first status' "$out" "$node_ready_seconds" ||
    fail "Watch did not start: $(cat "$out")"
  grep -q '^watch: first status SERVING$' "$out" ||
    fail "Watch began with $(cat "$out")"
  kill -TERM "$pid"
  wait_exit "$client_pid" 60
  cat "$out"
  pass_count=$((pass_count + $(grep -c '^ok:' "$out" || true)))
  ! grep -q '^FAIL:' "$out" || fail "Watch across a shutdown"
  [ "$exit_code" = 0 ] || fail "the Watch client exited $exit_code"
  shutdown_node "$pid" "$name"
  ok "node $name stopped cleanly (exit 0) with a Watch open"
}
