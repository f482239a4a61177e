#!/usr/bin/env bash
# Crash safety under load (issue 6, item 3), with a reseller and a venue
# on 127.0.0.1:
#  1. four clients record opt-ins as fast as they can and note every one
#     the reseller acknowledged; a client whose call fails retries the
#     same order (as a checkout would), so nothing it was told is lost
#     and nothing is recorded twice;
#  2. meanwhile the reseller is killed with SIGKILL at random moments (20
#     rounds, 6 under ASan)
#     (after a random number of further acknowledgements), and in every
#     other round the venue too, mid-sync; each is restarted at once;
#  3. at the end every acknowledged opt-in is at the venue exactly once,
#     and the venue's copy of the log has exactly the reseller's entries
#     (no gap, no duplicate);
#  4. a data directory with a damaged file: the node refuses to start
#     with a message naming the file, and changes no file.
source "$(dirname "$0")/lib.sh"
: "${PERMITD:?}" "${PERMITCTL:?}"
ctl() { "$PERMITCTL" "$@"; }
free_port() {
  /usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}
R=tixly.example
V=fillmore.example
rounds=${PERMIT_CRASH_ROUNDS:-20}
[ "${PERMIT_SANITIZE:-}" = ON ] && rounds=${PERMIT_CRASH_ROUNDS:-6}

declare -A pid
start() {
  rm -f "$tmp/$1/ports.json"
  "$PERMITD" --config "$tmp/$1/permit.conf" --workers 2 2>>"$tmp/$1.log" &
  pid[$1]=$!
  local deadline=$((SECONDS + 60))
  until [ -s "$tmp/$1/ports.json" ]; do
    kill -0 "${pid[$1]}" 2>/dev/null || fail "$1 exited at start: $(tail -3 "$tmp/$1.log")"
    [ $SECONDS -lt $deadline ] || fail "$1 did not start: $(tail -3 "$tmp/$1.log")"
    sleep 0.05
  done
}
crash() {
  kill -9 "${pid[$1]}" 2>/dev/null || true
  wait "${pid[$1]}" 2>/dev/null || true
}

ctl init --name $R --role issuer --data "$tmp/$R" --peer-addr "127.0.0.1:$(free_port)" \
  --api-addr "127.0.0.1:$(free_port)" >/dev/null
ctl init --name $V --role audience --data "$tmp/$V" --peer-addr "127.0.0.1:$(free_port)" \
  --api-addr "127.0.0.1:$(free_port)" >/dev/null
start $R; start $V
pair_up "$tmp/$R" "$tmp/$V" $V
ok "a reseller and a venue, pinned, with a list"

# client W: opt-ins until $tmp/stop exists; each acknowledged one (CREATED
# or, for a retried order, ALREADY_ACTIVE) is noted in acked.W.
client() {
  local w=$1 i=0 out
  : >"$tmp/acked.$w"
  while [ ! -e "$tmp/stop" ]; do
    i=$((i + 1))
    until out=$(ctl optin --data "$tmp/$R" --order "W$w-$i" --email "c$w.$i@example.com" \
        --given C --family "$w.$i" --venue $V --list newsletter --notice-version 1 2>&1); do
      # The reseller is down: a checkout retries the same order.
      [ -e "$tmp/stop" ] && [ ! -e "$tmp/drain" ] && return 0
      sleep 0.02
    done
    case $out in
    created*|"already active"*) echo "c$w.$i@example.com" >>"$tmp/acked.$w" ;;
    *) echo "client $w: $out" >>"$tmp/client.err" ;;
    esac
  done
}
acked() { cat "$tmp"/acked.* 2>/dev/null | wc -l; }

touch "$tmp/drain"
clients=()
for w in 1 2 3 4; do client $w & clients+=($!); done
kills_r=0 kills_v=0
for r in $(seq 1 "$rounds"); do
  want=$(($(acked) + 5 + RANDOM % 20))
  deadline=$((SECONDS + 60))
  until [ "$(acked)" -ge $want ]; do
    [ $SECONDS -lt $deadline ] || fail "round $r: acknowledgements stopped at $(acked)"
    sleep 0.02
  done
  crash $R; kills_r=$((kills_r + 1))
  if [ $((r % 2)) = 0 ]; then crash $V; kills_v=$((kills_v + 1)); start $V; fi
  start $R
done
# Let the clients finish the orders they have in hand, then stop them.
touch "$tmp/stop"
rm -f "$tmp/drain"
for p in "${clients[@]}"; do wait_exit "$p" 120; [ "$exit_code" = 0 ] || fail "a client exited $exit_code"; done
[ ! -s "$tmp/client.err" ] || fail "a client got an unexpected answer: $(head -3 "$tmp/client.err")"
n=$(acked)
ok "$rounds rounds: the reseller killed $kills_r times and the venue $kills_v times under load; $n opt-ins acknowledged"

# Every acknowledged opt-in reaches the venue exactly once.
deadline=$((SECONDS + 90))
while :; do
  ctl contacts export --data "$tmp/$V" --list newsletter --out "$tmp/list.csv" 2>/dev/null &&
    [ "$(($(wc -l <"$tmp/list.csv") - 1))" -ge "$n" ] && break
  [ $SECONDS -lt $deadline ] || fail "the venue has $(($(wc -l <"$tmp/list.csv") - 1)) of $n acknowledged opt-ins"
  sleep 0.1
done
cut -d, -f1 "$tmp/list.csv" | tail -n +2 | sort >"$tmp/have"
cat "$tmp"/acked.* | sort >"$tmp/want"
dups=$(uniq -d "$tmp/have" | wc -l)
[ "$dups" = 0 ] || fail "$dups buyers appear twice at the venue"
missing=$(comm -13 "$tmp/have" "$tmp/want" | wc -l)
[ "$missing" = 0 ] || fail "$missing acknowledged opt-ins are missing: $(comm -13 "$tmp/have" "$tmp/want" | head -3)"
ok "all $n acknowledged opt-ins are at the venue, each once ($(wc -l <"$tmp/have") contacts in all: unacknowledged ones may have been kept too)"

# The venue's copy of the log is the reseller's log: same size, verified.
deadline=$((SECONDS + 30))
while :; do
  ctl peer list --data "$tmp/$R" >"$tmp/rp" 2>&1
  ctl peer list --data "$tmp/$V" >"$tmp/vp" 2>&1
  sent=$(awk -v p=$V '$1 == p {print $4}' "$tmp/rp")
  recv=$(awk -v p=$R '$1 == p {print $5}' "$tmp/vp")
  [ -n "$sent" ] && [ "$sent" = "$recv" ] && break
  [ $SECONDS -lt $deadline ] || fail "the reseller's log has $sent entries, the venue's copy $recv"
  sleep 0.1
done
! grep -qi 'stopped\|equivocation' "$tmp/vp" || fail "the venue stopped the log: $(cat "$tmp/vp")"
[ "$sent" -ge "$n" ] || fail "the log has $sent entries for $n acknowledged opt-ins"
ok "the venue's copy of the log has exactly the reseller's $sent entries, checkpoints verified"

stop_node "${pid[$R]}"; stop_node "${pid[$V]}"
ok "both nodes stopped cleanly"

# A damaged file: the node refuses to start and changes nothing.
ctl compact --data "$tmp/$V" >/dev/null || fail "compact"
sst=$(ls -S "$tmp/$V"/db/*.sst | head -1)
size=$(stat -c %s "$sst")
printf 'DAMAGEDDAMAGEDDAMAGED' | dd of="$sst" bs=1 seek=$((size / 2)) conv=notrunc 2>/dev/null
(cd "$tmp/$V/db" && find . -type f ! -name LOG ! -name 'LOG.old*' -print0 | sort -z |
  xargs -0 sha256sum) >"$tmp/before.sums"
rc=0
"$PERMITD" --config "$tmp/$V/permit.conf" 2>"$tmp/damaged.log" || rc=$?
[ "$rc" != 0 ] || fail "the node started on a damaged data directory"
grep -q '"event":"data.damaged"' "$tmp/damaged.log" && grep -q "$(basename "$sst")" "$tmp/damaged.log" ||
  fail "no clear message naming the file: $(tail -2 "$tmp/damaged.log")"
(cd "$tmp/$V/db" && find . -type f ! -name LOG ! -name 'LOG.old*' -print0 | sort -z |
  xargs -0 sha256sum) >"$tmp/after.sums"
cmp -s "$tmp/before.sums" "$tmp/after.sums" || fail "a refused start changed files: $(diff "$tmp/before.sums" "$tmp/after.sums" | head -4)"
ok "a damaged file stops the start (exit $rc): $(grep -o '"msg":"[^"]*' "$tmp/damaged.log" | tail -1 | cut -c8-200)"
echo "$pass_count passed, 0 failed"
