#!/usr/bin/env bash
# A full disk (issue 6, item 5): reseller and venue keep their data on
# small tmpfs mounts of their own.
#  1. the reseller's disk is filled to the last byte: a new opt-in gets
#     RESOURCE_EXHAUSTED naming the cause, a replayed order still gets its
#     answer, the node keeps answering; space freed, opt-ins are taken
#     again;
#  2. the venue's disk is filled: its sync pauses and says why (peer
#     list), nothing is lost; space freed, it catches up.
# Needs root (mount); skips with a message otherwise.
source "$(dirname "$0")/lib.sh"
: "${PERMITD:?}" "${PERMITCTL:?}"
ctl() { "$PERMITCTL" "$@"; }
free_port() {
  /usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}
R=tixly.example
V=fillmore.example
mounts=()
mkdir -p "$tmp/mr" "$tmp/mv"
for m in "$tmp/mr" "$tmp/mv"; do
  if ! mount -t tmpfs -o size=48m permit-test "$m" 2>/dev/null; then
    echo "skip: cannot mount a tmpfs here (needs root; CI runs as root)"
    exit 0
  fi
  mounts+=("$m")
done
unmount_all() {
  for p in $(jobs -p); do kill -TERM "$p" 2>/dev/null || true; done
  for p in $(jobs -p); do wait "$p" 2>/dev/null || true; done
  for m in "${mounts[@]}"; do umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || true; done
  cleanup
}
trap unmount_all EXIT

declare -A pid dir
dir[$R]=$tmp/mr/$R
dir[$V]=$tmp/mv/$V
start() {
  rm -f "${dir[$1]}/ports.json"
  "$PERMITD" --config "${dir[$1]}/permit.conf" --workers 2 2>>"$tmp/$1.log" &
  pid[$1]=$!
  local deadline=$((SECONDS + 60))
  until [ -s "${dir[$1]}/ports.json" ]; do
    [ $SECONDS -lt $deadline ] || fail "$1 did not start: $(tail -3 "$tmp/$1.log")"
    sleep 0.05
  done
}
for n in $R $V; do
  role=issuer; [ $n = $V ] && role=audience
  ctl init --name $n --role $role --data "${dir[$n]}" --peer-addr "127.0.0.1:$(free_port)" \
    --api-addr "127.0.0.1:$(free_port)" >/dev/null
  # Keep 8 MiB free: the test fills the disk past that.
  sed -i 's/^min-free-disk-mb = .*/min-free-disk-mb = 8/' "${dir[$n]}/permit.conf"
  start $n
done
pair_up "${dir[$R]}" "${dir[$V]}" $V
optin() { ctl optin --data "${dir[$R]}" --order "$1" --email "$2" --given X --family Y \
  --venue $V --list newsletter --notice-version 1; }
for i in 1 2 3; do optin "D-$i" "d$i@example.com" >/dev/null || fail "optin $i"; done
exported_n() {
  ctl contacts export --data "${dir[$V]}" --list newsletter --out "$tmp/list.csv" 2>/dev/null &&
    [ "$(($(wc -l <"$tmp/list.csv") - 1))" -ge "$1" ]
}
deadline=$((SECONDS + 30))
until exported_n 3; do [ $SECONDS -lt $deadline ] || fail "first opt-ins not at the venue"; sleep 0.1; done
ok "two nodes on 48 MiB tmpfs mounts, three opt-ins synced"

# fill MOUNT: writes a file until the file system says it is full.
fill() { dd if=/dev/zero of="$1/filler" bs=1M 2>/dev/null || true; sync; }

# ---- 1. the reseller's disk full ----
fill "$tmp/mr"
[ "$(df --output=avail -B1 "$tmp/mr" | tail -1)" -lt 1048576 ] || fail "the reseller's disk did not fill"
# The node reads the free space at most twice a second: an opt-in or two
# may still be taken (durably: the write-ahead log has room); each such
# is counted and must reach the venue later.
extra=0
deadline=$((SECONDS + 10))
while :; do
  rc=0; optin "F-$extra" "f$extra@example.com" >"$tmp/out" 2>"$tmp/err" || rc=$?
  [ "$rc" != 0 ] && break
  extra=$((extra + 1))
  [ $SECONDS -lt $deadline ] || fail "opt-ins still taken on a full disk"
done
grep -q "RESOURCE_EXHAUSTED.*disk is nearly full" "$tmp/err" || fail "full disk: $(cat "$tmp/err")"
optin D-1 d1@example.com >"$tmp/out" 2>&1 || fail "a replayed order on a full disk: $(cat "$tmp/out")"
grep -q "already active" "$tmp/out" || fail "replay: $(cat "$tmp/out")"
kill -0 "${pid[$R]}" || fail "the reseller died on a full disk"
ctl peer list --data "${dir[$R]}" >/dev/null || fail "the reseller stopped answering"
ok "reseller disk full: a new opt-in is refused ($(head -c 140 "$tmp/err")), a replay is answered, the node serves on"
rm -f "$tmp/mr/filler"
deadline=$((SECONDS + 10))
until optin D-4 d4@example.com >"$tmp/out" 2>&1; do
  [ $SECONDS -lt $deadline ] || fail "opt-ins not taken after space returned: $(cat "$tmp/out")"
  sleep 0.1
done
grep -q "^created" "$tmp/out" || fail "after space returned: $(cat "$tmp/out")"
deadline=$((SECONDS + 30))
until exported_n $((4 + extra)); do [ $SECONDS -lt $deadline ] || fail "D-4 not at the venue"; sleep 0.1; done
ok "space freed: the reseller takes opt-ins again, and they sync"

# ---- 2. the venue's disk full ----
fill "$tmp/mv"
# Opt-ins keep coming; the venue, reading its free space at most twice a
# second, soon stops applying them and says why.
sent=4
deadline=$((SECONDS + 20))
until ctl peer list --data "${dir[$V]}" 2>/dev/null | grep -q "disk is nearly full"; do
  [ $SECONDS -lt $deadline ] || fail "the venue does not say its disk is full: $(ctl peer list --data "${dir[$V]}" 2>&1)"
  sent=$((sent + 1))
  optin "D-$sent" "d$sent@example.com" >/dev/null || fail "optin $sent"
done
kill -0 "${pid[$V]}" || fail "the venue died on a full disk"
ok "venue disk full: its sync pauses and says so ($(ctl peer list --data "${dir[$V]}" | grep -o 'backing off[^;]*' | head -1))"
rm -f "$tmp/mv/filler"
deadline=$((SECONDS + 60))
until exported_n $((sent + extra)); do [ $SECONDS -lt $deadline ] || fail "the venue did not catch up after space returned"; sleep 0.2; done
cut -d, -f1 "$tmp/list.csv" | tail -n +2 | sort | uniq -d | grep -q . && fail "duplicates at the venue"
ok "space freed: the venue caught up, all $((sent + extra)) opt-ins once each"

for n in $R $V; do stop_node "${pid[$n]}"; done
ok "both nodes stopped cleanly"
echo "$pass_count passed, 0 failed"
