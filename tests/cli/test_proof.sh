#!/usr/bin/env bash
# Proof of consent, and a lying reseller, with real nodes on 127.0.0.1.
# First federation: a reseller and a venue; the venue's `permitctl proof`
# file verifies offline with the reseller's card, says who collected which
# consent for which notice, and fails once any byte of it is changed or
# when checked against another node's card.  Second federation: the
# reseller runs with the fault switch that makes it sign checkpoints of a
# rewritten history, and the venue stops its log as equivocation.
source "$(dirname "$0")/lib.sh"
: "${PERMITD:?}" "${PERMITCTL:?}"
ctl() { "$PERMITCTL" "$@"; }
py=/usr/bin/python3
free_port() {
  $py -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}
R=tixly.example
V=fillmore.example

declare -A pid
start() { # DIR NAME [ENV=VALUE...]
  local d=$1 n=$2
  shift 2
  env "$@" "$PERMITD" --config "$d/$n/permit.conf" --workers 2 2>>"$d/$n.log" &
  pid[$d/$n]=$!
  wait_for '"event":"node.ready"' "$d/$n.log" 30 || fail "$n did not start: $(tail -5 "$d/$n.log")"
  local deadline=$((SECONDS + 30))
  until [ -s "$d/$n/ports.json" ]; do
    [ $SECONDS -lt $deadline ] || fail "$n wrote no ports.json"
    sleep 0.05
  done
}

# federation DIR [ENV=VALUE...]: a reseller (started with ENV) and a venue
# with list "newsletter", pinned to each other, the catalog fetched.
federation() {
  local d=$1
  shift
  mkdir -p "$d"
  ctl init --name $R --role issuer --data "$d/$R" --peer-addr "127.0.0.1:$(free_port)" \
    --api-addr "127.0.0.1:$(free_port)" >/dev/null || fail "init $R"
  ctl init --name $V --role audience --data "$d/$V" --peer-addr "127.0.0.1:$(free_port)" \
    --api-addr "127.0.0.1:$(free_port)" >/dev/null || fail "init $V"
  start "$d" $R "$@"
  start "$d" $V
  # The list exists before the pinning, so the first catalog fetch has it.
  printf 'Yes, send me news and presales from The Fillmore.' >"$d/notice.txt"
  ctl list define --data "$d/$V" --id newsletter --title "Fillmore news" \
    --notice-file "$d/notice.txt" >/dev/null || fail "list define"
  for n in $R $V; do ctl card --data "$d/$n" >"$d/$n.card"; done
  ctl peer add "$d/$V.card" --data "$d/$R" >/dev/null || fail "pin $V"
  ctl peer add "$d/$R.card" --data "$d/$V" >/dev/null || fail "pin $R"
  local deadline=$((SECONDS + 20))
  until ctl offers --data "$d/$R" --venue $V >"$d/offers" 2>/dev/null && [ -s "$d/offers" ]; do
    [ $SECONDS -lt $deadline ] || fail "no catalog of $V at $R"
    sleep 0.1
  done
}
optin() { # DIR ORDER EMAIL GIVEN FAMILY
  ctl optin --data "$1/$R" --order "$2" --email "$3" --given "$4" --family "$5" \
    --venue $V --list newsletter --notice-version 1 >/dev/null
}

# ---- proof of consent ----
f1=$tmp/f1
federation "$f1"
optin "$f1" P-1 ada@example.com Ada Lovelace || fail "optin 1"
optin "$f1" P-2 grace@example.org Grace Hopper || fail "optin 2"
optin "$f1" P-3 miles@example.net Miles Davis || fail "optin 3"
ok "a reseller and a venue; three opt-ins recorded"

# Until the venue holds a checkpoint covering more than ada's entry, the
# proof is refused (FAILED_PRECONDITION, retry) or has no sibling hash.
proof="$f1/ada.proof.json"
deadline=$((SECONDS + 20))
until ctl proof --data "$f1/$V" --email ada@example.com --list newsletter \
    --out "$proof" 2>"$f1/proof.err" &&
    $py -c 'import json,sys; sys.exit(len(json.load(open(sys.argv[1]))["inclusion_proof"]) < 1)' "$proof"; do
  [ $SECONDS -lt $deadline ] || fail "no proof: $(cat "$f1/proof.err")"
  grep -q "FAILED_PRECONDITION\|written to" "$f1/proof.err" || fail "proof: $(cat "$f1/proof.err")"
  sleep 0.1
done
$py - "$proof" <<'PY' || fail "proof file: $(cat "$proof")"
import json, sys
p = json.load(open(sys.argv[1]))
assert p["format"] == "permit-consent-proof/1", p
assert (p["issuer"], p["audience"], p["list_id"], p["seq"]) == \
    ("tixly.example", "fillmore.example", "newsletter", 0), p
assert p["list_title"] == "Fillmore news", p
assert p["notice_text"].startswith("Yes, send me news"), p
assert not any(k.endswith(".tmp") for k in p), p
PY
ls "$f1"/ada.proof.json.tmp* >/dev/null 2>&1 && fail "a temporary file was left"
ok "permitctl proof wrote the proof file ($(wc -c <"$proof") bytes)"

ctl proof --data "$f1/$V" --email "  ADA@Example.COM " --list newsletter >"$f1/ada2.json" ||
  fail "proof by a differently written address"
cmp -s <($py -c 'import json,sys; print(json.load(open(sys.argv[1]))["signed_record"])' "$proof") \
  <($py -c 'import json,sys; print(json.load(open(sys.argv[1]))["signed_record"])' "$f1/ada2.json") ||
  fail "the same buyer written otherwise gave another record"
rc=0; ctl proof --data "$f1/$V" --email nobody@example.com --list newsletter >/dev/null 2>"$f1/err" || rc=$?
[ "$rc" = 1 ] && grep -q NOT_FOUND "$f1/err" || fail "unknown buyer: rc $rc $(cat "$f1/err")"
! grep -q nobody "$f1/err" || fail "the NOT_FOUND message quotes the email: $(cat "$f1/err")"
rc=0; ctl proof --data "$f1/$V" --email "   " --list newsletter >/dev/null 2>"$f1/err" || rc=$?
[ "$rc" = 1 ] && grep -q INVALID_ARGUMENT "$f1/err" || fail "blank email: rc $rc $(cat "$f1/err")"
rc=0; ctl proof --data "$f1/$V" --email ada@example.com --list jazz >/dev/null 2>"$f1/err" || rc=$?
[ "$rc" = 1 ] && grep -q NOT_FOUND "$f1/err" || fail "unknown list: rc $rc $(cat "$f1/err")"
rc=0; ctl proof --data "$f1/$R" --email ada@example.com --list newsletter >/dev/null 2>"$f1/err" || rc=$?
[ "$rc" = 1 ] && grep -q FAILED_PRECONDITION "$f1/err" || fail "proof on the reseller: $(cat "$f1/err")"
ok "the address is normalised; an unknown buyer or list is NOT_FOUND without quoting the email"

ctl verify-proof "$proof" --issuer-card "$f1/$R.card" >"$f1/verified" 2>"$f1/err" ||
  fail "the proof does not verify: $(cat "$f1/err")"
head -1 "$f1/verified" | grep -qE "^tixly.example collected consent \(method checkout-checkbox\) at [0-9T:-]+Z for list newsletter of fillmore.example, notice version 1 \(sha256 [0-9a-f]{64}, text matches\), subject [0-9a-f]{64}; record [0-9a-f]{32} is entry 0 of the log whose root [0-9a-f]{64} at size [0-9]+ tixly.example signed at [0-9T:-]+Z\.$" ||
  fail "verify-proof said: $(cat "$f1/verified")"
grep -q "pseudonym" "$f1/verified" || fail "verify-proof does not say the subject is a pseudonym"
[ -z "${PROOF_TEST_VERBOSE:-}" ] || { cat "$proof"; cat "$f1/verified"; }
ok "verify-proof with the reseller's card: $(head -c 150 "$f1/verified")..."

# tamper FIELD HOW: a copy of the proof with one thing changed.
tamper() {
  $py - "$proof" "$f1/bad.json" "$1" "$2" <<'PY'
import json, sys
src, dst, field, how = sys.argv[1:]
p = json.load(open(src))
def flip(s, i):  # one character, to another of the same alphabet
    alpha = "0123456789abcdef" if all(c in "0123456789abcdef" for c in s) else \
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    c = s[i]
    return s[:i] + alpha[(alpha.index(c) + 1) % len(alpha)] + s[i + 1:]
if how == "drop":
    del p[field]
elif field == "inclusion_proof":
    p[field][0] = flip(p[field][0], int(how))
elif field == "seq":
    p[field] += int(how)
elif field == "notice_text":
    p[field] += how
elif how.startswith("set:"):
    p[field] = how[4:]
else:
    s = p[field].rstrip("=")
    i = int(how) % len(s)
    p[field] = flip(s, i) + p[field][len(s):]
json.dump(p, open(dst, "w"))
PY
}
expect_refused() { # WHAT
  local rc=0
  ctl verify-proof "$f1/bad.json" --issuer-card "$f1/$R.card" >/dev/null 2>"$f1/err" || rc=$?
  [ "$rc" = 1 ] || fail "$1: verify-proof exited $rc"
  grep -q "NOT VERIFIED" "$f1/err" || fail "$1: $(cat "$f1/err")"
  [ -z "${PROOF_TEST_VERBOSE:-}" ] || echo "  $1: $(cat "$f1/err")"
}
for i in 0 7 40 100 -1; do tamper signed_record $i; expect_refused "signed_record char $i"; done
for i in 0 30 -1; do tamper signed_checkpoint $i; expect_refused "signed_checkpoint char $i"; done
tamper inclusion_proof 5; expect_refused "inclusion proof"
tamper seq 1; expect_refused "seq"
tamper notice_text " (and partners)"; expect_refused "notice text"
tamper issuer set:bluenote.example; expect_refused "issuer"
tamper audience set:bluenote.example; expect_refused "audience"
tamper list_id set:jazz; expect_refused "list id"
tamper signed_record drop; expect_refused "no record"
tamper list_title drop
ctl verify-proof "$f1/bad.json" --issuer-card "$f1/$R.card" >/dev/null ||
  fail "the list title is not part of what is proven, yet dropping it failed"
tamper notice_text drop
ctl verify-proof "$f1/bad.json" --issuer-card "$f1/$R.card" | grep -q "text not included" ||
  fail "a proof without the notice text does not say so"
tamper signed_record 40
ctl verify-proof "$f1/bad.json" --issuer-card "$f1/$R.card" >/dev/null 2>"$f1/why" || true
ok "one changed character anywhere that matters is refused (exit 1), e.g. $(head -c 200 "$f1/why")"

rc=0; ctl verify-proof "$proof" --issuer-card "$f1/$V.card" >/dev/null 2>"$f1/err" || rc=$?
[ "$rc" = 1 ] && grep -q "NOT VERIFIED" "$f1/err" || fail "the venue's card was taken for the issuer's (rc $rc)"
sed 's/"card": "\(.\{40\}\)./"card": "\1A/' "$f1/$R.card" >"$f1/bad.card"
rc=0; ctl verify-proof "$proof" --issuer-card "$f1/bad.card" >/dev/null 2>"$f1/err" || rc=$?
[ "$rc" = 1 ] || fail "a tampered card was accepted (rc $rc)"
rc=0; ctl verify-proof "$proof" >/dev/null 2>&1 || rc=$?
[ "$rc" = 2 ] || fail "verify-proof without --issuer-card exited $rc"
rc=0; ctl verify-proof --issuer-card "$f1/$R.card" >/dev/null 2>&1 || rc=$?
[ "$rc" = 2 ] || fail "verify-proof without a file exited $rc"
rc=0; ctl verify-proof "$f1/nonexistent" --issuer-card "$f1/$R.card" >/dev/null 2>&1 || rc=$?
[ "$rc" = 1 ] || fail "verify-proof of a missing file exited $rc"
rc=0; ctl proof --data "$f1/$V" --list newsletter >/dev/null 2>&1 || rc=$?
[ "$rc" = 2 ] || fail "proof without --email exited $rc"
ok "the venue's card or a tampered card is refused (1); bad usage exits 2"

for n in $R $V; do stop_node "${pid[$f1/$n]}"; done
ok "both nodes stopped cleanly"

# ---- a reseller that rewrites history ----
f2=$tmp/f2
federation "$f2" PERMIT_FAULT_REWRITE_HISTORY=yes-i-am-a-test-and-this-node-must-lie
grep -q '"event":"peer.fault_injection"' "$f2/$R.log" || fail "the fault switch did not announce itself"
for i in 1 2 3; do optin "$f2" "E-$i" "buyer$i@example.com" Buyer "$i" || fail "optin E-$i"; done
deadline=$((SECONDS + 20))
until ctl peer list --data "$f2/$V" >"$f2/peers" 2>&1 && grep -q "stopped: equivocation" "$f2/peers"; do
  [ $SECONDS -lt $deadline ] || fail "no equivocation seen: $(cat "$f2/peers")"
  sleep 0.1
done
wait_for '"event":"sync.equivocation"' "$f2/$V.log" 10 || fail "no sync.equivocation event"
grep -q "(EQUIVOCATION)" "$f2/peers" || fail "peer list does not flag it: $(cat "$f2/peers")"
ok "the venue caught the rewritten history: $(grep -o 'stopped: equivocation[^;]*' "$f2/peers" | head -1)"
# No proof is given from a log stopped for equivocation.
ctl contacts export --data "$f2/$V" --list newsletter >"$f2/list.csv" || fail "export after equivocation"
held=$(sed -n '2p' "$f2/list.csv" | cut -d, -f1)
if [ -n "$held" ]; then
  rc=0; ctl proof --data "$f2/$V" --email "$held" --list newsletter >/dev/null 2>"$f2/err" || rc=$?
  [ "$rc" = 1 ] && grep -q "FAILED_PRECONDITION.*equivocation" "$f2/err" ||
    fail "a proof from an equivocating log was given (rc $rc): $(cat "$f2/err")"
  ok "no proof from the stopped log: $(head -c 160 "$f2/err")"
fi
for n in $R $V; do stop_node "${pid[$f2/$n]}"; done
ok "both nodes stopped cleanly"
echo "$pass_count passed, 0 failed"
