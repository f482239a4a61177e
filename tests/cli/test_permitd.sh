#!/usr/bin/env bash
# permitd's lifecycle: keys created on first run with safe modes, reused on
# the next, clean exit on SIGINT and SIGTERM, and clear refusals of unsafe
# or damaged key files, a second node on the same data, and bad options.
source "$(dirname "$0")/lib.sh"
: "${PERMITD:?}" "${PERMITCTL:?}"
data="$tmp/data"

"$PERMITD" --data "$data" 2>"$tmp/log1" &
pid=$!
wait_for '"event":"node.ready"' "$tmp/log1" || fail "node not ready: $(cat "$tmp/log1")"
grep -q '"event":"keys.created"' "$tmp/log1" || fail "no keys.created"
[ "$(stat -c %a "$data/keys")" = 700 ] || fail "keys dir mode"
[ "$(stat -c %a "$data/keys/identity.key")" = 600 ] || fail "identity.key mode"
[ "$(stat -c %a "$data/keys/sealing.key")" = 600 ] || fail "sealing.key mode"
[ -f "$data/db/CURRENT" ] || fail "no RocksDB database in $data/db"
ok "first run creates keys (0600) and a database"

# A second node on the same data directory is refused (RocksDB's lock).
rc=0
"$PERMITD" --data "$data" 2>"$tmp/log2" || rc=$?
[ "$rc" = 1 ] || fail "second node on the same data exited $rc"
grep -q '"event":"data.locked"' "$tmp/log2" || fail "no data.locked: $(cat "$tmp/log2")"
grep -q 'another permitd or permitctl is using' "$tmp/log2" || fail "refusal does not say why"
ok "a second node on the same data is refused"

kill -INT "$pid"
wait_exit "$pid"
[ "$exit_code" = 0 ] || fail "SIGINT exit code $exit_code"
grep -q '"event":"node.stopped"' "$tmp/log1" || fail "no node.stopped"
ok "SIGINT stops the node with exit 0"

id1=$("$PERMITCTL" keys --data "$data" | awk '/identity/ {print $5}')
[ ${#id1} = 16 ] || fail "permitctl keys printed no key id"
"$PERMITD" --data "$data" 2>"$tmp/log3" &
pid=$!
wait_for '"event":"node.ready"' "$tmp/log3" || fail "restart not ready"
grep -q '"event":"keys.loaded"' "$tmp/log3" || fail "keys not reused"
grep -q "identity key $id1" "$tmp/log3" || fail "key id changed"
kill -TERM "$pid"
wait_exit "$pid"
[ "$exit_code" = 0 ] || fail "SIGTERM exit code $exit_code"
ok "restart reuses the keys (id $id1); SIGTERM exits 0"

chmod 644 "$data/keys/identity.key"
rc=0
"$PERMITD" --data "$data" 2>"$tmp/log4" || rc=$?
[ "$rc" = 1 ] || fail "group-readable key accepted (exit $rc)"
grep -q 'identity.key' "$tmp/log4" || fail "refusal does not name the file"
grep -q '644' "$tmp/log4" || fail "refusal does not give the mode: $(cat "$tmp/log4")"
chmod 600 "$data/keys/identity.key"
ok "a group-readable key file is refused"

mv "$data/keys/sealing.key" "$tmp/sealing.key"
rc=0
"$PERMITD" --data "$data" 2>"$tmp/log5" || rc=$?
[ "$rc" = 1 ] || fail "half a key pair accepted (exit $rc)"
grep -q 'restore' "$tmp/log5" || fail "no advice: $(cat "$tmp/log5")"
[ ! -e "$data/keys/sealing.key" ] || fail "a new sealing key was made"
mv "$tmp/sealing.key" "$data/keys/sealing.key"
ok "a missing sealing key is refused, not replaced"

rc=0
"$PERMITD" --bogus 2>/dev/null || rc=$?
[ "$rc" = 2 ] || fail "bad option exit $rc"
rc=0
"$PERMITCTL" frobnicate 2>/dev/null || rc=$?
[ "$rc" = 2 ] || fail "bad command exit $rc"
rc=0
"$PERMITCTL" keys --data "$tmp/nowhere" 2>"$tmp/err" || rc=$?
[ "$rc" = 1 ] && grep -q 'no keys' "$tmp/err" || fail "permitctl keys on empty dir"
ok "bad options and commands exit 2 with a message"

echo "$pass_count passed, 0 failed"
