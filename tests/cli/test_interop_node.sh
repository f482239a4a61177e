#!/usr/bin/env bash
# Interoperability with grpc-js (Node.js): Check over h2c and over mutual
# TLS with Ed25519 certificates on both sides, the error statuses
# (NOT_FOUND with a percent-encoded message, UNIMPLEMENTED,
# RESOURCE_EXHAUSTED, INVALID_ARGUMENT, DEADLINE_EXCEEDED from the
# server), an unpinned client refused, and Watch across a node shutdown.
# The client is interop/node/interop.js, with @grpc/grpc-js and
# @grpc/proto-loader at the versions of interop/node/package-lock.json.
source "$(dirname "$0")/lib.sh"
: "${PERMIT_SRC:?}"
source "$PERMIT_SRC/interop/lib.sh"

# Node.js: whatever node is on PATH (a developer's own install counts);
# on a machine without one, install-deps.sh installs Debian's nodejs and
# npm (it lists them only when node is missing).
if ! command -v node >/dev/null 2>&1; then
  echo "node is missing: running deploy/install-deps.sh test" >&2
  bash "$PERMIT_SRC/deploy/install-deps.sh" test >&2 ||
    fail "install-deps.sh could not install nodejs and npm"
  hash -r
  command -v node >/dev/null 2>&1 || fail "node is still missing"
fi
need_cmd npm npm
need_cmd openssl openssl
need_cmd flock util-linux

# The client's packages, installed from the lock file when node_modules is
# missing or older than the lock.  The lock is held so that two test runs
# (say the optimised and the ASan build) never install at once.
dir="$PERMIT_SRC/interop/node"
(
  flock -w 300 9 || fail "another npm ci held $dir for 5 minutes"
  if [ ! -d "$dir/node_modules" ] ||
      [ "$dir/package-lock.json" -nt "$dir/node_modules" ]; then
    echo "npm ci in $dir" >&2
    (cd "$dir" && npm ci --no-audit --no-fund --ignore-scripts) \
      >"$tmp/npm.log" 2>&1 || fail "npm ci failed: $(cat "$tmp/npm.log")"
    touch "$dir/node_modules"
  fi
) 9<"$dir"
grpc_js=$(cd "$dir" && node -p 'require("@grpc/grpc-js/package.json").version')
ok "grpc-js $grpc_js on node $(node --version) (OpenSSL $(node -p process.versions.openssl))"

client=(node "$dir/interop.js")
make_client_cert probe
make_client_cert rogue
start_node n1 --trust-cert "probe.example=$tmp/probe.crt"
n1_pid=$node_pid n1_api=$node_api

run_checks calls "${client[@]}" calls --proto "$PERMIT_SRC/proto" \
  --api "$node_api" --peer "$node_peer" --node-cert "$node_cert" \
  --client-cert "$tmp/probe.crt" --client-key "$tmp/probe.key" \
  --rogue-cert "$tmp/rogue.crt" --rogue-key "$tmp/rogue.key"
wait_for '"event":"tls.unpinned_peer"' "$tmp/n1.log" 10 ||
  fail "no tls.unpinned_peer in the node's log"
ok "the node logged tls.unpinned_peer for the rogue client"

watch_across_shutdown "$n1_pid" n1 "${client[@]}" watch \
  --proto "$PERMIT_SRC/proto" --api "$n1_api"

echo "$pass_count passed, 0 failed"
