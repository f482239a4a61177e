#!/usr/bin/env bash
# Network faults (issue 6, item 4).  A reseller (tixly.example) and a
# venue (fillmore.example) as two hosts, each in a network namespace of
# its own made here, joined by one link (10.77.0.1 - 10.77.0.2); each
# node's peer listener is on its link address, the reseller's public
# (consent) listener too, and every command runs inside the namespace of
# the node it talks to.
#  1. baseline: pinned, a list defined, opt-ins reach the venue;
#  2. faults on the link, both ways (delay 40 ms +-20 ms normal, 5 % loss,
#     25 % reordered, 1 % duplicated): 30 opt-ins and a withdrawal through
#     the consent page; the venue converges: every acknowledged opt-in
#     exported once, the withdrawn one gone, its copy of the log exactly
#     the reseller's entries, nothing stopped;
#  3. a partition (every packet dropped) for PERMIT_PARTITION_S seconds
#     (60; at least 30): opt-ins and withdrawals go on at the reseller,
#     the venue reports that it cannot reach the reseller, neither node
#     stops; healed with the faults back on, the venue converges with no
#     gap or duplicate within HEAL_BOUND_S, and a fresh withdrawal reaches
#     the venue's export within 2 s with the faults still on, then within
#     1 s on a clean link.
# The link is a veth pair with tc netem where the kernel has netem; where
# it has not (CONFIG_NET_SCH_NETEM unset, as on this project's machines),
# two TUN devices joined by tests/cli/netem_relay.py, which applies the
# same netem parameters in user space.  Needs root and iproute2; prints
# "skip: ..." and passes where network namespaces cannot be made.
source "$(dirname "$0")/lib.sh"
: "${PERMITD:?}" "${PERMITCTL:?}" "${PERMIT_SRC:?}"
py=/usr/bin/python3
skip() {
  echo "skip: $*"
  exit 0
}
now_ms() { date +%s%3N; }
t_start=$(now_ms)

[ "$(id -u)" = 0 ] || skip "network namespaces need root"
command -v ip >/dev/null 2>&1 || skip "iproute2 (ip) is missing: bash deploy/install-deps.sh test"

partition_s=${PERMIT_PARTITION_S:-60}
if [ "$partition_s" -lt 30 ]; then
  # The venue notices a silent peer after 10 to 20 s (PING keepalive).
  echo "PERMIT_PARTITION_S=$partition_s raised to 30: the venue needs up to 20 s to notice"
  partition_s=30
fi
if [ "${PERMIT_SANITIZE:-OFF}" = ON ]; then ready_s=120; else ready_s=30; fi
HEAL_BOUND_S=15
R=tixly.example
V=fillmore.example
R_IP=10.77.0.1
V_IP=10.77.0.2
nsr=permit-r-$$
nsv=permit-v-$$
declare -A ns=([$R]=$nsr [$V]=$nsv) pid

# The nodes and the relay are this shell's jobs: lib.sh's cleanup ends
# them; then the namespaces go, with anything still inside.
made_ns=()
netns_cleanup() {
  local n p
  cleanup
  for n in "${made_ns[@]}"; do
    for p in $(ip netns pids "$n" 2>/dev/null); do kill -9 "$p" 2>/dev/null || true; done
    ip netns del "$n" 2>/dev/null || true
  done
}
trap netns_cleanup EXIT

ip netns add "$nsr" 2>"$tmp/netns.err" ||
  skip "cannot make a network namespace: $(head -1 "$tmp/netns.err")"
made_ns+=("$nsr")
ip netns add "$nsv" || fail "ip netns add $nsv"
made_ns+=("$nsv")
in_ns() { # NODE CMD...: runs CMD in NODE's namespace
  local n=${ns[$1]}
  shift
  ip netns exec "$n" "$@"
}
ctl() { # NODE ARGS...: permitctl for NODE, in its namespace
  local node=$1
  shift
  in_ns "$node" "$PERMITCTL" "$@" --data "$tmp/$node"
}

# ---- the link ----
ip -n "$nsr" link set lo up && ip -n "$nsv" link set lo up || fail "lo up"
ip -n "$nsr" link add pr0 type veth peer name pv0 netns "$nsv" || fail "veth pair"
if command -v tc >/dev/null 2>&1 &&
    ip netns exec "$nsr" tc qdisc add dev pr0 root netem delay 0ms 2>"$tmp/tc.err" &&
    ip netns exec "$nsv" tc qdisc add dev pv0 root netem delay 0ms 2>>"$tmp/tc.err"; then
  link=netem
  ip -n "$nsr" addr add $R_IP/24 dev pr0 && ip -n "$nsv" addr add $V_IP/24 dev pv0 ||
    fail "veth addresses"
else
  ip -n "$nsr" link del pr0 || fail "ip link del pr0"
  [ -c /dev/net/tun ] ||
    skip "the kernel has no netem ($(head -1 "$tmp/tc.err" 2>/dev/null)) and there is no /dev/net/tun"
  link="tun relay (no netem in this kernel: $(head -1 "$tmp/tc.err" 2>/dev/null))"
  mkdir "$tmp/link"
  $py "$PERMIT_SRC/tests/cli/netem_relay.py" "$nsr" pr0 "$nsv" pv0 "$tmp/link" \
    2>"$tmp/relay.log" &
  relay=$!
  wait_for . "$tmp/link/ready" 10 || fail "the relay did not start: $(cat "$tmp/relay.log")"
  ip -n "$nsr" addr add $R_IP peer $V_IP dev pr0 && ip -n "$nsv" addr add $V_IP peer $R_IP dev pv0 ||
    fail "tun addresses"
fi
ip -n "$nsr" link set pr0 up && ip -n "$nsv" link set pv0 up || fail "link up"

# set_link NETEM-PARAMETERS...: the faults on both ends from now on
# ("clean": none).
set_link() {
  local want="$*" e
  [ "$want" = clean ] && want=""
  if [ "$link" = netem ]; then
    for e in "$nsr pr0" "$nsv pv0"; do
      set -- $e
      # An empty netem is a plain queue.
      ip netns exec "$1" tc qdisc replace dev "$2" root netem $want ||
        fail "tc netem $want on $2"
    done
  else
    echo "$want" >"$tmp/link/mode.new" && mv "$tmp/link/mode.new" "$tmp/link/mode"
    local deadline=$((SECONDS + 10))
    until [ "$(cat "$tmp/link/ack" 2>/dev/null)" = "$want" ]; do
      kill -0 "$relay" 2>/dev/null || fail "the relay ended: $(cat "$tmp/relay.log")"
      [ $SECONDS -lt $deadline ] || fail "the relay did not take \"$want\""
      sleep 0.01
    done
  fi
}
faults="delay 40ms 20ms distribution normal loss 5% reorder 25% 50% duplicate 1%"
set_link clean
# A closed port across the link answers "refused": the route works.
out=$(in_ns $R "$py" -c "import socket; socket.create_connection(('$V_IP', 9), timeout=5)" 2>&1 || true)
grep -q refused <<<"$out" || fail "no route from $R to $V across the link: $out"
ok "two namespaces joined by a link ($link)"

# ---- the nodes ----
start() { # NODE
  rm -f "$tmp/$1/ports.json"
  # A plain command, not in_ns: $! must be permitd itself (ip execs it).
  ip netns exec "${ns[$1]}" "$PERMITD" --config "$tmp/$1/permit.conf" --workers 2 \
    2>>"$tmp/$1.log" &
  pid[$1]=$!
  local deadline=$((SECONDS + ready_s))
  until [ -s "$tmp/$1/ports.json" ] && grep -q '"event":"node.ready"' "$tmp/$1.log"; do
    kill -0 "${pid[$1]}" 2>/dev/null || fail "$1 exited: $(tail -5 "$tmp/$1.log")"
    [ $SECONDS -lt $deadline ] || fail "$1 did not start: $(tail -5 "$tmp/$1.log")"
    sleep 0.05
  done
  [ "$(cat "/proc/${pid[$1]}/comm")" = permitd ] || fail "pid ${pid[$1]} is not $1's permitd"
}
alive() {
  local n
  for n in $R $V; do
    kill -0 "${pid[$n]}" 2>/dev/null || fail "$n is gone: $(tail -5 "$tmp/$n.log")"
  done
}
in_ns $R "$PERMITCTL" init --name $R --role issuer --data "$tmp/$R" --peer-addr $R_IP:7443 \
  --api-addr 127.0.0.1:7080 --public-addr $R_IP:8443 >/dev/null || fail "init $R"
in_ns $V "$PERMITCTL" init --name $V --role audience --data "$tmp/$V" --peer-addr $V_IP:7443 \
  --api-addr 127.0.0.1:7080 >/dev/null || fail "init $V"
start $R
start $V
echo "News from The Fillmore." >"$tmp/notice.txt"
ctl $V list define --id newsletter --title News --notice-file "$tmp/notice.txt" >/dev/null ||
  fail "list define"
ctl $R card >"$tmp/r.card" && ctl $V card >"$tmp/v.card" || fail "cards"
grep -q "$R_IP:7443" "$tmp/r.card" || fail "the reseller's card does not name $R_IP:7443: $(cat "$tmp/r.card")"
ctl $V peer add "$tmp/r.card" >/dev/null || fail "pin $R at $V"
ctl $R peer add "$tmp/v.card" >/dev/null || fail "pin $V at $R"
deadline=$((SECONDS + 30))
until ctl $R offers --venue $V 2>/dev/null | grep -q newsletter; do
  [ $SECONDS -lt $deadline ] || fail "no catalog of $V at $R: $(ctl $R peer list 2>&1)"
  sleep 0.1
done

# Every acknowledged opt-in is in $tmp/acked, every withdrawn one in
# $tmp/withdrawn; the venue must export exactly the difference.
: >"$tmp/acked"
: >"$tmp/withdrawn"
declare -A rec link_of
n_opt=0
optin() { # EMAIL
  local out
  n_opt=$((n_opt + 1))
  out=$(ctl $R optin --order "T-$n_opt" --email "$1" --given Buyer --family "$n_opt" \
    --venue $V --list newsletter --notice-version 1 2>&1) || fail "optin $1: $out"
  case $out in
  "created record "*) ;;
  *) fail "optin $1 not created: $out" ;;
  esac
  rec[$1]=$(sed -nE 's/^created record ([0-9a-f]{32}) .*/\1/p' <<<"$out")
  link_of[$1]=$(sed -n 's/^consent link: //p' <<<"$out")
  case ${link_of[$1]} in
  "https://$R_IP:8443/c/"?*) ;;
  *) fail "the consent link of $1 is not on $R_IP:8443: $out" ;;
  esac
  echo "$1" >>"$tmp/acked"
}

# withdraw EMAIL: the buyer's browser on the consent page (the reseller's
# public listener, reached in its namespace): GET the page, POST its form
# with the page's csrf field, same origin.  Sets $posted_ms to the POST
# and $answered (ms until its 303: the withdrawal is stored).
withdraw() {
  local l=${link_of[$1]} code csrf
  code=$(in_ns $R curl -sk --http2 --max-time 15 -o "$tmp/page.html" -w '%{http_code}' "$l") ||
    fail "GET the consent page of $1: curl $?"
  [ "$code" = 200 ] || fail "the consent page of $1 answered $code"
  csrf=$(grep -o 'name="csrf" value="[^"]*"' "$tmp/page.html" | head -1 | sed 's/.*value="//; s/"$//')
  [ -n "$csrf" ] || fail "no csrf field on the consent page of $1"
  posted_ms=$(now_ms)
  code=$(in_ns $R curl -sk --http2 --max-time 15 -o /dev/null -w '%{http_code}' \
    -H "Origin: https://$R_IP:8443" --data-urlencode "csrf=$csrf" \
    --data-urlencode "record=${rec[$1]}" "$l/withdraw") || fail "POST withdraw of $1: curl $?"
  [ "$code" = 303 ] || fail "the withdrawal of $1 answered $code"
  answered=$(($(now_ms) - posted_ms))
  echo "$1" >>"$tmp/withdrawn"
}

# have: the venue's export now, one address a line, sorted, in $tmp/have.
have() {
  ctl $V contacts export --list newsletter --out "$tmp/list.csv" 2>"$tmp/export.err" || return 1
  tail -n +2 "$tmp/list.csv" | cut -d, -f1 | sort >"$tmp/have"
}
# watch_gone EMAIL: starts a poller of the venue's export inside its
# namespace: Venue/ListContacts (what `permitctl contacts export` calls)
# every 10 ms on one connection, so that the figure is the node's and not
# the cost of starting a program per poll.  It writes "present" once it
# has seen EMAIL, then "gone MS POLLS" (MS: Unix time in ms) at the first
# poll without it, into $tmp/poll.out.
watch_gone() {
  rm -f "$tmp/poll.out"
  ip netns exec "$nsv" "$py" - 127.0.0.1:7080 newsletter "$1" >"$tmp/poll.out" 2>"$tmp/poll.err" <<'PY' &
import sys, time
import grpc

addr, lst, email = sys.argv[1], sys.argv[2], sys.argv[3].encode()


def varint(b, i):
    v = shift = 0
    while True:
        c = b[i]
        i += 1
        v |= (c & 0x7F) << shift
        if c < 0x80:
            return v, i
        shift += 7


def email_of(m):
    """ContactEntry.email (field 1)."""
    i = 0
    while i < len(m):
        key, i = varint(m, i)
        if key & 7 == 0:
            _, i = varint(m, i)
        elif key & 7 == 2:
            n, i = varint(m, i)
            if key >> 3 == 1:
                return m[i:i + n]
            i += n
        else:
            i += 8 if key & 7 == 1 else 4
    return b""


req = b"\x0a" + bytes([len(lst)]) + lst.encode()  # ListContactsRequest.list_id
call = grpc.insecure_channel(addr).unary_stream(
    "/permit.v1.Venue/ListContacts", request_serializer=lambda b: b,
    response_deserializer=lambda b: b)
polls = 0
end = time.monotonic() + 60
while time.monotonic() < end:
    have = {email_of(m) for m in call(req, timeout=10)}
    polls += 1
    if polls == 1:
        if email not in have:
            sys.exit("not exported to begin with")
        print("present", flush=True)
    elif email not in have:
        print("gone %d %d" % (time.time() * 1000, polls), flush=True)
        sys.exit(0)
    time.sleep(0.01)
sys.exit("still exported after 60 s")
PY
  poller=$!
  local deadline=$((SECONDS + 30))
  until grep -q '^present' "$tmp/poll.out" 2>/dev/null; do
    kill -0 $poller 2>/dev/null || fail "the export poller ended: $(cat "$tmp/poll.err")"
    [ $SECONDS -lt $deadline ] || fail "the export poller did not start: $(cat "$tmp/poll.err")"
    sleep 0.02
  done
}
# gone_in MS EMAIL: waits for the poller to see EMAIL gone, at most 10 *
# MS after the POST, and checks the export (permitctl) agrees; sets
# $latency (ms from the POST) and $how.
gone_in() {
  wait_exit $poller $((($1 * 10 + 999) / 1000))
  [ "$exit_code" = 0 ] || fail "$V still exports $2 after $((10 * $1)) ms: $(cat "$tmp/poll.err")"
  read -r _ gone_ms polls < <(grep '^gone' "$tmp/poll.out")
  latency=$((gone_ms - posted_ms))
  how="POST answered in $answered ms, $polls polls"
  have || fail "export: $(cat "$tmp/export.err")"
  ! grep -qx -- "$2" "$tmp/have" || fail "the poller saw $2 gone, permitctl contacts export still has it"
}
# peer_field NODE PEER COLUMN: one column of NODE's `peer list` for PEER
# (4: SENT, 5: RECEIVED, 6: the sync state to the end of the line).
peer_field() {
  ctl "$1" peer list >"$tmp/peers.$1" 2>&1 || return 0
  if [ "$3" = 6 ]; then
    awk -v p="$2" '$1 == p { $1 = $2 = $3 = $4 = $5 = ""; sub(/^ +/, ""); print }' "$tmp/peers.$1"
  else
    awk -v p="$2" -v c="$3" '$1 == p { print $c }' "$tmp/peers.$1"
  fi
}
# converged: the venue exports exactly the acknowledged, not withdrawn
# opt-ins, each once, and its copy of the log is the reseller's, not
# stopped.  Sets $why otherwise.
converged() {
  local sent recv dups
  sort "$tmp/acked" >"$tmp/a.sorted"
  sort "$tmp/withdrawn" >"$tmp/w.sorted"
  comm -23 "$tmp/a.sorted" "$tmp/w.sorted" >"$tmp/want"
  if ! have; then
    why="export failed: $(cat "$tmp/export.err")"
    return 1
  fi
  dups=$(uniq -d "$tmp/have" | wc -l)
  [ "$dups" = 0 ] || fail "$dups buyers exported twice: $(uniq -d "$tmp/have" | head -3 | tr '\n' ' ')"
  if ! cmp -s "$tmp/have" "$tmp/want"; then
    why="the venue exports $(wc -l <"$tmp/have") of $(wc -l <"$tmp/want"); missing: $(comm -13 "$tmp/have" "$tmp/want" | head -3 | tr '\n' ' ') extra: $(comm -23 "$tmp/have" "$tmp/want" | head -3 | tr '\n' ' ')"
    return 1
  fi
  sent=$(peer_field $R $V 4)
  recv=$(peer_field $V $R 5)
  if [ -z "$sent" ] || [ "$sent" != "$recv" ]; then
    why="the reseller's log has $sent entries, the venue's copy $recv"
    return 1
  fi
  ! grep -qi 'stopped\|equivocation' "$tmp/peers.$V" || fail "the venue stopped the log: $(cat "$tmp/peers.$V")"
  entries=$sent
}
# converge SECONDS WHAT: waits for converged; sets $took (ms).
converge() {
  local t0 deadline=$((SECONDS + $1))
  t0=$(now_ms)
  until converged; do
    alive
    [ $SECONDS -lt $deadline ] || fail "$2: not converged after $1 s: $why"
    sleep 0.1
  done
  took=$(($(now_ms) - t0))
}

# ---- 1. baseline ----
for i in 1 2 3 4 5; do optin "base$i@example.com"; done
converge 30 "baseline"
ok "baseline: pinned, a list, 5 opt-ins at the venue ($took ms), logs equal ($entries entries)"

# ---- 2. faults ----
set_link $faults
for i in $(seq 1 30); do optin "fault$i@example.com"; done
watch_gone fault7@example.com
withdraw fault7@example.com
gone_in 5000 fault7@example.com
lat_faults=$latency
[ "$lat_faults" -le 5000 ] || fail "a withdrawal under faults took $lat_faults ms (want <= 5000; $how)"
how_faults=$how
converge 60 "under faults"
ok "under faults ($faults): 30 opt-ins and a withdrawal; withdrawn at the venue $lat_faults ms after the POST ($how_faults); converged, logs equal ($entries entries)"

# ---- 3. a partition ----
st=$(peer_field $V $R 6)
case $st in following*) ;; *) fail "before the partition the venue's sync is not following: $st" ;; esac
set_link loss 100%
t_cut=$SECONDS
reported=
i=0
# Opt-ins every few seconds all through the partition, and two
# withdrawals: one of a buyer the venue has, one of a buyer it has not
# seen yet.
while [ $((SECONDS - t_cut)) -lt "$partition_s" ]; do
  i=$((i + 1))
  optin "cut$i@example.com"
  [ $i = 2 ] && withdraw fault3@example.com
  [ $i = 4 ] && withdraw cut1@example.com
  alive
  if [ -z "$reported" ]; then
    st=$(peer_field $V $R 6)
    case $st in
    *"cannot connect"* | *"connection lost"* | *"no answer"* | *unreachable*)
      reported="after $((SECONDS - t_cut)) s: $st"
      ;;
    esac
  fi
  sleep 3
done
[ -n "$reported" ] || fail "the venue never reported the reseller unreachable; it says: $(peer_field $V $R 6)"
echo "the venue's view of $R in the partition, $reported"
echo "the reseller's view of $V: $(peer_field $R $V 6)"
have || fail "export in the partition"
grep -qx fault3@example.com "$tmp/have" || fail "the venue lost fault3 before the withdrawal could reach it"
ok "a partition of $partition_s s: $i opt-ins and 2 withdrawals recorded at the reseller, the venue reported it unreachable, both nodes up"

set_link $faults
converge $HEAL_BOUND_S "after the partition"
heal_ms=$took
ok "healed (faults on): the venue converged $heal_ms ms after the link came back (bound $HEAL_BOUND_S s): no gap, no duplicate, logs equal ($entries entries)"

watch_gone fault11@example.com
withdraw fault11@example.com
gone_in 2000 fault11@example.com
lat_heal=$latency
[ "$lat_heal" -le 2000 ] || fail "a withdrawal after the partition took $lat_heal ms with the faults on (want <= 2000; $how)"
how_heal=$how
set_link clean
watch_gone fault12@example.com
withdraw fault12@example.com
gone_in 1000 fault12@example.com
lat_clean=$latency
[ "$lat_clean" -le 1000 ] || fail "a withdrawal on the clean link took $lat_clean ms (want <= 1000; $how)"
how_clean=$how
converge 10 "at the end"
ok "withdrawal latency recovered: $lat_heal ms with the faults on (<= 2000; $how_heal), $lat_clean ms on a clean link (<= 1000; $how_clean)"

stop_node "${pid[$R]}"
stop_node "${pid[$V]}"
ok "both nodes stopped cleanly"
if [ -n "${relay:-}" ]; then
  kill -TERM "$relay"
  wait_exit "$relay" 10
  echo "relay: $(cat "$tmp/link/stats" 2>/dev/null)"
fi
echo "figures: withdrawal under faults $lat_faults ms; convergence after healing $heal_ms ms; withdrawal after healing $lat_heal ms (faults on), $lat_clean ms (clean); run $((($(now_ms) - t_start) / 1000)) s"
echo "$pass_count passed, 0 failed"
