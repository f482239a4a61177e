#!/usr/bin/env bash
# The opt-in flow end to end, with three real nodes on 127.0.0.1: a
# reseller and two venues set up with permitctl exactly as an operator
# would.  Each venue ends with exactly its own buyers, decrypted; a venue
# cannot pull another venue's log; the same order twice is one record;
# restarts under load lose nothing and duplicate nothing; nothing readable
# is at rest.
source "$(dirname "$0")/lib.sh"
: "${PERMITD:?}" "${PERMITCTL:?}"
ctl() { "$PERMITCTL" "$@"; }
free_port() {
  /usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

declare -A pid
start() { start_node "$1" 2; }
stop() { stop_node "${pid[$1]}"; }

nodes="tixly.example fillmore.example bluenote.example"
ctl init --name tixly.example --role issuer --data "$tmp/tixly.example" \
  --peer-addr "127.0.0.1:$(free_port)" --api-addr "127.0.0.1:$(free_port)" >/dev/null
for v in fillmore.example bluenote.example; do
  ctl init --name "$v" --role audience --data "$tmp/$v" \
    --peer-addr "127.0.0.1:$(free_port)" --api-addr "127.0.0.1:$(free_port)" >/dev/null
done
[ "$(stat -c %a "$tmp/tixly.example/permit.conf")" = 600 ] || fail "config mode"
rc=0; ctl init --name tixly.example --role issuer --data "$tmp/tixly.example" \
  --peer-addr 127.0.0.1:1 2>/dev/null || rc=$?
[ "$rc" = 1 ] || fail "a second init was not refused"
ok "permitctl init made three nodes (and refuses to init twice)"

for n in $nodes; do start "$n"; done
for n in $nodes; do ctl card --data "$tmp/$n" >"$tmp/$n.card"; done
ctl peer add "$tmp/fillmore.example.card" --data "$tmp/tixly.example" >/dev/null
ctl peer add "$tmp/bluenote.example.card" --data "$tmp/tixly.example" >/dev/null
ctl peer add "$tmp/tixly.example.card" --data "$tmp/fillmore.example" >/dev/null
ctl peer add "$tmp/tixly.example.card" --data "$tmp/bluenote.example" >/dev/null
# A card whose signature does not match is refused.
sed 's/"card": "\(.\{40\}\)./"card": "\1A/' "$tmp/bluenote.example.card" >"$tmp/bad.card"
rc=0; ctl peer add "$tmp/bad.card" --data "$tmp/fillmore.example" 2>"$tmp/err" || rc=$?
[ "$rc" != 0 ] || fail "a tampered card was accepted"
ok "cards exchanged and pinned; a tampered card is refused ($(head -c 120 "$tmp/err"))"

echo "Yes, send me news from The Fillmore." >"$tmp/n1.txt"
echo "Send me the Blue Note jazz letter." >"$tmp/n2.txt"
ctl list define --data "$tmp/fillmore.example" --id newsletter --title "Fillmore news" \
  --notice-file "$tmp/n1.txt" | grep -q "notice version 1 (new)" || fail "list define"
ctl list define --data "$tmp/bluenote.example" --id jazz --title "Jazz" \
  --notice-file "$tmp/n2.txt" >/dev/null || fail "list define jazz"
# Refused by the node (on its sync thread): a clear error, and the node
# goes on (a refusal once brought it down).
for id in "" "Bad List"; do
  rc=0; ctl list define --data "$tmp/bluenote.example" --id "$id" --title "Jazz" \
    --notice-file "$tmp/n2.txt" >/dev/null 2>"$tmp/err" || rc=$?
  [ "$rc" = 1 ] && grep -q "INVALID_ARGUMENT" "$tmp/err" ||
    fail "list id \"$id\": exit $rc, $(cat "$tmp/err")"
done
ctl list define --data "$tmp/bluenote.example" --id jazz --title "Jazz" \
  --notice-file "$tmp/n2.txt" | grep -q "notice version 1 (same text)" ||
  fail "the venue did not answer after refusing bad list ids"
for v in fillmore.example bluenote.example; do
  deadline=$((SECONDS + 30))
  until ctl offers --data "$tmp/tixly.example" --venue "$v" >"$tmp/offers.$v" 2>/dev/null &&
      [ -s "$tmp/offers.$v" ]; do
    [ $SECONDS -lt $deadline ] || fail "no catalog of $v at the reseller"
    sleep 0.1
  done
done
grep -q "newsletter" "$tmp/offers.fillmore.example" || fail "offers"
ok "venues defined lists; the reseller fetched their signed catalogs"

optin() { ctl optin --data "$tmp/tixly.example" --order "$1" --email "$2" \
  --given "$3" --family "$4" --venue "$5" --list "$6" --notice-version 1; }
optin A-1 ada@example.com Ada Lovelace fillmore.example newsletter >"$tmp/o1" || fail "optin 1"
optin A-2 grace@example.org "Grace" "Hopper, Jr." fillmore.example newsletter >/dev/null || fail "optin 2"
optin A-3 miles@example.net Miles Davis bluenote.example jazz >/dev/null || fail "optin 3"
grep -q "^created record" "$tmp/o1" || fail "first opt-in not created"
grep -q "consent link: https://" "$tmp/o1" || fail "no consent link"
optin A-1 ada@example.com Ada Lovelace fillmore.example newsletter >"$tmp/o1b" || fail "repeat"
grep -q "^already active: record $(sed -nE 's/^created record ([0-9a-f]+).*/\1/p' "$tmp/o1")" "$tmp/o1b" ||
  fail "the same order twice was not ALREADY_ACTIVE with the same record"
rc=0; optin A-9 nobody@example.com No Body fillmore.example newsletter-x 2>"$tmp/err" >/dev/null || rc=$?
[ "$rc" = 1 ] && grep -q NOT_FOUND "$tmp/err" || fail "unknown list: $(cat "$tmp/err")"
rc=0; ctl optin --data "$tmp/tixly.example" --order A-8 --email x@example.com --venue fillmore.example \
  --list newsletter --notice-version 7 2>"$tmp/err" >/dev/null || rc=$?
grep -q FAILED_PRECONDITION "$tmp/err" || fail "stale notice version: $(cat "$tmp/err")"
rc=0; optin A-7 "not an email" X Y fillmore.example newsletter 2>"$tmp/err" >/dev/null || rc=$?
grep -q INVALID_ARGUMENT "$tmp/err" || fail "bad email: $(cat "$tmp/err")"
ok "opt-ins recorded; same order twice is ALREADY_ACTIVE; bad input gets the right status"

export_until() { # VENUE LIST COUNT
  local deadline=$((SECONDS + 30))
  while :; do
    ctl contacts export --data "$tmp/$1" --list "$2" --out "$tmp/$1.csv" 2>/dev/null &&
      [ "$(($(wc -l <"$tmp/$1.csv") - 1))" -ge "$3" ] && return 0
    [ $SECONDS -lt $deadline ] || return 1
    sleep 0.1
  done
}
export_until fillmore.example newsletter 2 || fail "fillmore did not get its 2 buyers"
export_until bluenote.example jazz 1 || fail "bluenote did not get its buyer"
head -1 "$tmp/fillmore.example.csv" | grep -q "^Email Address,First Name,Last Name,Language,Opt-in Time,Source,Notice Version,Record Id" ||
  fail "CSV header: $(head -1 "$tmp/fillmore.example.csv")"
grep -q '^ada@example.com,Ada,Lovelace,' "$tmp/fillmore.example.csv" || fail "ada missing"
grep -q '^grace@example.org,Grace,"Hopper, Jr.",' "$tmp/fillmore.example.csv" || fail "grace (RFC 4180 quoting)"
! grep -q miles "$tmp/fillmore.example.csv" || fail "fillmore holds bluenote's buyer"
grep -q '^miles@example.net,Miles,Davis,' "$tmp/bluenote.example.csv" || fail "miles missing"
[ "$(wc -l <"$tmp/bluenote.example.csv")" = 2 ] || fail "bluenote holds more than its buyer"
ctl contacts export --data "$tmp/fillmore.example" --list newsletter --format jsonl >"$tmp/f.jsonl"
[ "$(wc -l <"$tmp/f.jsonl")" = 2 ] || fail "jsonl export"
ok "each venue holds exactly its own buyers, decrypted (CSV and JSON lines)"

# bluenote asks tixly for fillmore's log with its own (pinned) identity.
/usr/bin/python3 - "$tmp" <<'PY' || fail "PERMISSION_DENIED check"
import json, sys, grpc
tmp = sys.argv[1]
peer = json.load(open(f"{tmp}/tixly.example/ports.json"))["peer"]
creds = grpc.ssl_channel_credentials(
    root_certificates=open(f"{tmp}/tixly.example/node.crt", "rb").read(),
    private_key=open(f"{tmp}/bluenote.example/keys/identity.key", "rb").read(),
    certificate_chain=open(f"{tmp}/bluenote.example/node.crt", "rb").read())
ch = grpc.secure_channel(f"127.0.0.1:{peer}", creds,
                         options=[("grpc.ssl_target_name_override", "tixly.example")])
pull = ch.unary_stream("/permit.v1.Peer/Pull", request_serializer=lambda b: b,
                       response_deserializer=lambda b: b)
def req(audience):  # PullRequest{audience=1, from_seq=2, follow=3}
    a = audience.encode()
    return bytes([0x0a, len(a)]) + a
try:
    list(pull(req("fillmore.example"), timeout=10))
    sys.exit("bluenote read fillmore's log")
except grpc.RpcError as e:
    assert e.code() == grpc.StatusCode.PERMISSION_DENIED, e
    print("PERMISSION_DENIED:", e.details())
items = list(pull(req("bluenote.example"), timeout=10))
assert len(items) >= 2, items  # its one entry and a checkpoint
PY
ok "a venue pulling another venue's log gets PERMISSION_DENIED"

ctl peer list --data "$tmp/tixly.example" >"$tmp/peers"
grep -E '^fillmore.example .* 2 ' "$tmp/peers" >/dev/null || fail "fillmore's log is not exactly 2 entries: $(cat "$tmp/peers")"
grep -E '^bluenote.example .* 1 ' "$tmp/peers" >/dev/null || fail "bluenote's log is not exactly 1 entry: $(cat "$tmp/peers")"
ok "the reseller's logs hold 2 entries for fillmore and 1 for bluenote"

# Restarts under load: every acknowledged opt-in arrives exactly once.
acked="$tmp/acked"; : >"$acked"
load() {
  for i in $(seq 1 60); do
    if optin "L-$i" "load$i@example.com" Load "$i" fillmore.example newsletter >/dev/null 2>&1; then
      echo "load$i@example.com" >>"$acked"
    fi
  done
}
load &
loader=$!
while [ "$(wc -l <"$acked")" -lt 10 ]; do sleep 0.05; done
stop fillmore.example; start fillmore.example            # the venue mid-sync
while [ "$(wc -l <"$acked")" -lt 25 ]; do sleep 0.05; done
kill -9 "${pid[tixly.example]}"; wait "${pid[tixly.example]}" 2>/dev/null || true
start tixly.example                                        # the reseller, killed
wait "$loader"
n=$(wc -l <"$acked")
[ "$n" -ge 30 ] || fail "only $n opt-ins acknowledged"
export_until fillmore.example newsletter $((n + 2)) || fail "acknowledged opt-ins missing after restarts"
while read -r e; do
  c=$(grep -c "^$e," "$tmp/fillmore.example.csv" || true)
  [ "$c" = 1 ] || fail "$e appears $c times at the venue"
done <"$acked"
ok "$n acknowledged opt-ins under venue restart and reseller kill: each arrived exactly once"

for n in $nodes; do stop "$n"; done
ok "all nodes stopped cleanly"
for e in ada@example.com grace@example.org miles@example.net Lovelace Hopper load7@example.com; do
  if grep -rla --fixed-strings "$e" "$tmp/tixly.example" "$tmp/fillmore.example" "$tmp/bluenote.example" >"$tmp/hits"; then
    fail "\"$e\" found in plaintext in: $(cat "$tmp/hits")"
  fi
done
ok "no test email or name in plaintext in any node's data directory"
echo "$pass_count passed, 0 failed"
