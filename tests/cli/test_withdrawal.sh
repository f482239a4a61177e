#!/usr/bin/env bash
# Withdrawal and erasure both ways (issue 5), with three real nodes on
# 127.0.0.1, each with its public HTTPS listener: a reseller
# (tixly.example) and two venues (fillmore.example, bluenote.example).
#  1. opt-ins for five buyers, two of them at both venues, reach the
#     venues' exports, each row with its one-click unsubscribe URL;
#  2. in headless Chromium a buyer opens the consent link, sees the lists
#     and leaves one; the venue's export drops the contact within 5 s (the
#     screenshot is kept as $TEST_BIN_DIR/artifacts/consent-centre.png);
#  3. a forged link, a link with a moved expiry, another buyer's link on
#     someone's record, cross-site posts and posts without the csrf field
#     get a plain error page and change nothing (and the same through
#     permit.v1.Buyer); markup in a list's title and notice is shown as
#     text;
#  4. an unsubscribe at the venue (permitctl unsubscribe, and the RFC 8058
#     one-click POST; a GET changes nothing) reaches the reseller's consent
#     view; the withdrawn order cannot be replayed, a new order is a new
#     opt-in;
#  5. erasure, through the page (confirm, then erase) and Buyer/Erase:
#     the venues' change feed hands each address over once; after
#     compaction no data directory holds the buyers' emails, names or the
#     sealed contact bytes of any of their opt-ins (which the same search
#     found before, and still finds for a buyer who stays); after a
#     restart the logs verify (verify-proof) and new opt-ins sync;
#  6. a rotated link secret voids the old consent and unsubscribe links.
# Expired links are not made here: that needs the node's secret or clock
# (tests/unit/test_token.c and test_issuer.c cover expiry); a link whose
# expiry field was moved is refused as forged.  Helpers for bytes and
# gRPC: tests/cli/withdrawal_util.py.
source "$(dirname "$0")/lib.sh"
: "${PERMITD:?}" "${PERMITCTL:?}" "${PERMIT_SRC:?}" "${TEST_BIN_DIR:?}"
ctl() { "$PERMITCTL" "$@"; }
py=/usr/bin/python3
util() { $py "$PERMIT_SRC/tests/cli/withdrawal_util.py" "$@"; }
free_port() {
  $py -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}
now_ms() { date +%s%3N; }
t0=$(now_ms)
lap_t=$t0
# lap: sets $lap to the time since the last lap (or the start).
lap() {
  local t
  t=$(now_ms)
  lap="$((t - lap_t)) ms"
  lap_t=$t
}
if [ "${PERMIT_SANITIZE:-OFF}" = ON ]; then ready_s=120; else ready_s=30; fi

R=tixly.example
F=fillmore.example
B=bluenote.example
nodes="$R $F $B"
declare -A pid pub
start() { # NAME
  rm -f "$tmp/$1/ports.json"
  "$PERMITD" --config "$tmp/$1/permit.conf" --workers 2 2>>"$tmp/$1.log" &
  pid[$1]=$!
  local deadline=$((SECONDS + ready_s))
  # A restart appends to the log: ports.json is this start's sign.
  until [ -s "$tmp/$1/ports.json" ] && grep -q '"event":"node.ready"' "$tmp/$1.log"; do
    kill -0 "${pid[$1]}" 2>/dev/null || fail "$1 exited: $(tail -5 "$tmp/$1.log")"
    [ $SECONDS -lt $deadline ] || fail "$1 did not start: $(tail -5 "$tmp/$1.log")"
    sleep 0.05
  done
}
stop() { stop_node "${pid[$1]}"; }

# until_ok SECONDS WHAT CMD...: runs CMD until it succeeds, or fails
# with WHAT at the deadline.
until_ok() {
  local deadline=$((SECONDS + $1)) what=$2
  shift 2
  until "$@"; do
    [ $SECONDS -lt $deadline ] || fail "$what"
    sleep 0.05
  done
}

# web METHOD URL OUT [curl options...]: HTTP/2 over TLS (the listener's
# certificate is self-signed); prints the status, the body goes to OUT and
# the response headers to OUT.h.
web() {
  local method=$1 url=$2 out=$3
  shift 3
  curl -sk --http2 --max-time 15 -X "$method" -o "$out" -D "$out.h" \
    -w '%{http_code}' "$@" "$url" || echo "curl-failed-$?"
}

# page URL OUT: GETs a consent page that must answer 200.
page() {
  local code
  code=$(web GET "$1" "$2")
  [ "$code" = 200 ] || fail "GET $1 answered $code: $(head -c 300 "$2")"
}
# state_of PAGE RECORD: the data-state of RECORD's card on PAGE, or "".
state_of() {
  grep -o "data-record=\"$2\" data-state=\"[^\"]*\"" "$1" |
    sed 's/.*data-state="//; s/"$//' || true
}
# csrf_of PAGE: the value of the page's hidden csrf field.
csrf_of() {
  grep -o 'name="csrf" value="[^"]*"' "$1" | head -1 | sed 's/.*value="//; s/"$//'
}
# state_is LINK RECORD STATE: the consent page shows RECORD in STATE.
state_is() {
  page "$1" "$tmp/state.html"
  [ "$(state_of "$tmp/state.html" "$2")" = "$3" ]
}

# export VENUE LIST: the list's contacts as JSON lines in $tmp/VENUE.LIST.
export_list() {
  ctl contacts export --data "$tmp/$1" --list "$2" --format jsonl \
    >"$tmp/$1.$2.new" 2>"$tmp/export.err" || return 1
  mv "$tmp/$1.$2.new" "$tmp/$1.$2"
}
exported() { # VENUE LIST EMAIL
  export_list "$1" "$2" && grep -q "\"email\":\"$3\"" "$tmp/$1.$2"
}
not_exported() { # VENUE LIST EMAIL
  export_list "$1" "$2" && ! grep -q "\"email\":\"$3\"" "$tmp/$1.$2"
}
# emails VENUE LIST: the sorted addresses the list exports now.
emails() {
  export_list "$1" "$2" || fail "export of $2 at $1: $(cat "$tmp/export.err")"
  grep -o '"email":"[^"]*"' "$tmp/$1.$2" | sort | tr '\n' ' '
}

# proof_of KEY VENUE EMAIL LIST: the venue's proof file of the buyer's
# current opt-in on LIST in $tmp/KEY.proof (once a checkpoint covers it
# with an inclusion path), and its sealed contact's bytes in ct[KEY].
declare -A ct
proof_of() {
  local deadline=$((SECONDS + 20))
  until ctl proof --data "$tmp/$2" --email "$3" --list "$4" --out "$tmp/$1.proof" 2>"$tmp/proof.err" &&
      $py -c 'import json,sys; sys.exit(len(json.load(open(sys.argv[1]))["inclusion_proof"]) < 1)' \
        "$tmp/$1.proof"; do
    [ $SECONDS -lt $deadline ] || fail "no proof for $3 at $2: $(cat "$tmp/proof.err")"
    sleep 0.1
  done
  ct[$1]=$(util ciphertext "$tmp/$1.proof") || fail "no ciphertext in $1's proof"
}

# ---- 1. three nodes, five buyers ----
ctl init --name $R --role issuer --data "$tmp/$R" --peer-addr "127.0.0.1:$(free_port)" \
  --api-addr "127.0.0.1:$(free_port)" --public-addr "127.0.0.1:$(free_port)" >/dev/null ||
  fail "init $R"
for v in $F $B; do
  ctl init --name $v --role audience --data "$tmp/$v" --peer-addr "127.0.0.1:$(free_port)" \
    --api-addr "127.0.0.1:$(free_port)" --public-addr "127.0.0.1:$(free_port)" >/dev/null ||
    fail "init $v"
done
for n in $nodes; do start $n; done
for n in $nodes; do
  pub[$n]=$($py -c 'import json,sys; print(json.load(open(sys.argv[1]))["public"])' \
    "$tmp/$n/ports.json") || fail "$n has no public port in ports.json"
done
# The lists exist before the pinning, so the first catalog fetch has them.
# Bluenote's title and notice carry markup: the consent page must show it
# as text.
inject='<img src=x onerror=alert(1)>'
printf 'Yes, send me news from The Fillmore.' >"$tmp/notice-f.txt"
printf 'Send me the Blue Note jazz letter. %s <script>alert("notice")</script> & more' \
  "$inject" >"$tmp/notice-b.txt"
ctl list define --data "$tmp/$F" --id newsletter --title "Fillmore news" \
  --notice-file "$tmp/notice-f.txt" >/dev/null || fail "list define newsletter"
ctl list define --data "$tmp/$B" --id jazz --title "Jazz $inject" \
  --notice-file "$tmp/notice-b.txt" >/dev/null || fail "list define jazz (title with markup)"
for n in $nodes; do ctl card --data "$tmp/$n" >"$tmp/$n.card"; done
# The venues pin the reseller first: its first catalog fetch then
# succeeds, rather than failing and waiting for the next round (5 s).
for v in $F $B; do
  ctl peer add "$tmp/$R.card" --data "$tmp/$v" >/dev/null || fail "pin $R at $v"
done
for v in $F $B; do
  ctl peer add "$tmp/$v.card" --data "$tmp/$R" >/dev/null || fail "pin $v at $R"
done
for v in $F $B; do
  until_ok 30 "no catalog of $v at $R" \
    eval "ctl offers --data '$tmp/$R' --venue $v >'$tmp/offers.$v' 2>/dev/null && [ -s '$tmp/offers.$v' ]"
done

declare -A rec link
# optin KEY ORDER EMAIL GIVEN FAMILY VENUE LIST: sets rec[KEY], link[KEY].
optin() {
  ctl optin --data "$tmp/$R" --order "$2" --email "$3" --given "$4" --family "$5" \
    --venue "$6" --list "$7" --notice-version 1 >"$tmp/optin.$1" 2>&1 ||
    fail "optin $2: $(cat "$tmp/optin.$1")"
  grep -q '^created record' "$tmp/optin.$1" || fail "optin $2 not created: $(cat "$tmp/optin.$1")"
  rec[$1]=$(sed -nE 's/^created record ([0-9a-f]{32}) .*/\1/p' "$tmp/optin.$1")
  link[$1]=$(sed -n 's/^consent link: //p' "$tmp/optin.$1")
  [ -n "${rec[$1]}" ] || fail "no record id: $(cat "$tmp/optin.$1")"
  case ${link[$1]} in
  "https://127.0.0.1:${pub[$R]}/c/"?*) ;;
  *) fail "consent link of $2 is not on the public listener: ${link[$1]}" ;;
  esac
}
optin ada_f A-1 ada@example.com Ada Lovelace $F newsletter
optin ada_b A-2 ada@example.com Ada Lovelace $B jazz
optin grace G-1 grace@example.org Grace Hopper $F newsletter
optin miles M-1 miles@example.net Miles Davis $B jazz
optin nina_f N-1 nina@example.com Nina Simone $F newsletter
optin nina_b N-2 nina@example.com Nina Simone $B jazz
optin ella E-1 ella@example.com Ella Fitzgerald $B jazz
for e in ada@example.com grace@example.org nina@example.com; do
  until_ok 30 "$F does not export $e" exported $F newsletter "$e"
done
for e in ada@example.com miles@example.net nina@example.com ella@example.com; do
  until_ok 30 "$B does not export $e" exported $B jazz "$e"
done
[ "$(emails $F newsletter)" = '"email":"ada@example.com" "email":"grace@example.org" "email":"nina@example.com" ' ] ||
  fail "$F exports: $(emails $F newsletter)"
grep -q "\"unsubscribe_url\":\"https://127.0.0.1:${pub[$F]}/u/newsletter/$R/" "$tmp/$F.newsletter" ||
  fail "no one-click URL on $F's public listener: $(head -1 "$tmp/$F.newsletter")"
ctl contacts export --data "$tmp/$F" --list newsletter --out "$tmp/$F.csv" 2>/dev/null ||
  fail "CSV export"
head -1 "$tmp/$F.csv" | grep -q ',Unsubscribe URL' || fail "CSV header: $(head -1 "$tmp/$F.csv")"
grep -q "^ada@example.com,Ada,Lovelace,.*,https://127.0.0.1:${pub[$F]}/u/newsletter/$R/" "$tmp/$F.csv" ||
  fail "CSV row without its unsubscribe URL: $(grep ada "$tmp/$F.csv")"
# (The sealed bytes of ada's opt-in at fillmore, for the erasure below.)
proof_of ada_f $F ada@example.com newsletter
lap
ok "3 nodes with public HTTPS listeners; 7 opt-ins of 5 buyers exported with one-click URLs ($lap)"

# ---- 2. the consent centre in headless Chromium ----
# Chromium and Node.js come from install-deps.sh; playwright-core from the
# lock file of interop/browser (held under flock, as two builds' test runs
# may install at once).
if ! command -v node >/dev/null 2>&1 || [ ! -x "${PERMIT_CHROMIUM:-/usr/bin/chromium}" ]; then
  echo "node or chromium is missing: running deploy/install-deps.sh test" >&2
  bash "$PERMIT_SRC/deploy/install-deps.sh" test >&2 ||
    fail "install-deps.sh could not install chromium and nodejs"
  hash -r
fi
command -v node >/dev/null 2>&1 || fail "node is still missing"
command -v npm >/dev/null 2>&1 || fail "npm is missing (bash deploy/install-deps.sh test)"
[ -x "${PERMIT_CHROMIUM:-/usr/bin/chromium}" ] || fail "chromium is still missing"
bdir="$PERMIT_SRC/interop/browser"
(
  flock -w 300 9 || fail "another npm ci held $bdir for 5 minutes"
  if [ ! -d "$bdir/node_modules" ] || [ "$bdir/package-lock.json" -nt "$bdir/node_modules" ]; then
    echo "npm ci in $bdir" >&2
    (cd "$bdir" && npm ci --no-audit --no-fund --ignore-scripts) >"$tmp/npm.log" 2>&1 ||
      fail "npm ci failed: $(cat "$tmp/npm.log")"
    touch "$bdir/node_modules"
  fi
) 9<"$bdir"
art="$TEST_BIN_DIR/artifacts"
mkdir -p "$art"
shot="$art/consent-centre.png"
rm -f "$shot"
# The browser runs while the venue's export is polled: the drop is timed
# from the reseller's log line of the stored withdrawal (the click's POST)
# to the first export without ada.
node "$bdir/consent.mjs" "${link[ada_f]}" "$shot" --expect-record "${rec[ada_b]}" \
  --withdraw "${rec[ada_f]}" --ignore-https-errors >"$tmp/chromium.out" 2>"$tmp/chromium.err" &
browser=$!
deadline=$((SECONDS + 60))
until not_exported $F newsletter ada@example.com; do
  kill -0 $browser 2>/dev/null || [ -n "${gone_t:-}" ] || gone_t=$SECONDS
  # The browser ended a while ago and ada is still there: it failed.
  if [ -n "${gone_t:-}" ] && [ $((SECONDS - gone_t)) -ge 10 ]; then
    wait_exit $browser 1
    fail "$F still exports ada 10 s after the browser ended ($exit_code): $(cat "$tmp/chromium.err") $(cat "$tmp/chromium.out")"
  fi
  [ $SECONDS -lt $deadline ] || fail "$F still exports ada after 60 s: $(cat "$tmp/chromium.err")"
  sleep 0.05
done
dropped_at=$(now_ms)
wait_exit $browser 60
[ "$exit_code" = 0 ] || fail "the browser run failed ($exit_code): $(cat "$tmp/chromium.err") $(cat "$tmp/chromium.out")"
$py - "$tmp/chromium.out" "${rec[ada_f]}" "${rec[ada_b]}" <<'PY' || fail "what Chromium saw: $(cat "$tmp/chromium.out")"
import json, sys
lines = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
f, b = sys.argv[2], sys.argv[3]
assert len(lines) == 2, lines
before = {i["record"]: i["state"] for i in lines[0]["items"]}
after = {i["record"]: i["state"] for i in lines[1]["items"]}
assert before == {f: "active", b: "active"}, before
assert after == {f: "withdrawn", b: "active"}, after
assert lines[0]["status"] == 200 and lines[1]["status"] == 200, lines
assert "tixly.example" in lines[0]["title"], lines[0]["title"]
PY
stored=$(grep -m1 '"event":"consent.withdrawn"' "$tmp/$R.log" | sed 's/^{"ts":"\([^"]*\)".*/\1/')
stored_ms=$(date -d "$stored" +%s%3N) || fail "no time in the reseller's consent.withdrawn line"
dropped=$((dropped_at - stored_ms))
[ "$dropped" -le 5000 ] || fail "$F dropped ada only $dropped ms after the click (want <= 5000)"
[ -s "$shot" ] || fail "no screenshot"
exported $B jazz ada@example.com || fail "withdrawing at $F dropped ada at $B too"
lap
ok "Chromium: ada saw both lists, left $F's; its export dropped her $dropped ms after the click's withdrawal was stored; screenshot $shot ($lap)"

# ---- 3. bad links and forged posts change nothing ----
page "${link[ada_f]}" "$tmp/ada.html"
csrf_ada=$(csrf_of "$tmp/ada.html")
page "${link[grace]}" "$tmp/grace.html"
csrf_grace=$(csrf_of "$tmp/grace.html")
[ ${#csrf_ada} -ge 16 ] && [ ${#csrf_grace} -ge 16 ] || fail "no csrf field on the consent page"
[ "$csrf_ada" != "$csrf_grace" ] || fail "two buyers' pages share a csrf value"
grep -qi "^content-security-policy: default-src 'none'" "$tmp/ada.html.h" ||
  fail "no strict CSP: $(cat "$tmp/ada.html.h")"
grep -qi '^cache-control: no-store' "$tmp/ada.html.h" || fail "the consent page may be cached"
[ "$(curl -sk --http2 -o /dev/null -w '%{http_version}' "${link[ada_f]}")" = 2 ] ||
  fail "the consent page is not served over HTTP/2"
# The markup in bluenote's title and notice is text.
grep -qF '&lt;img src=x onerror=alert(1)&gt;' "$tmp/ada.html" || fail "the list title is not shown escaped"
grep -qF '&lt;script&gt;alert(' "$tmp/ada.html" || fail "the notice is not shown escaped"
if grep -qiF '<img' "$tmp/ada.html" || grep -qiF '<script' "$tmp/ada.html"; then
  fail "raw markup on the consent page: $(grep -iF -e '<img' -e '<script' "$tmp/ada.html")"
fi

tok_ada=${link[ada_f]##*/c/}
base="https://127.0.0.1:${pub[$R]}"
snap_f=$(emails $F newsletter)
snap_b=$(emails $B jazz)
# unchanged WHAT: the venues' exports and ada's and grace's states are as
# they were.
unchanged() {
  [ "$(emails $F newsletter)" = "$snap_f" ] || fail "$1 changed $F's export: $(emails $F newsletter)"
  [ "$(emails $B jazz)" = "$snap_b" ] || fail "$1 changed $B's export: $(emails $B jazz)"
  page "${link[ada_f]}" "$tmp/check.html"
  [ "$(state_of "$tmp/check.html" "${rec[ada_b]}")" = active ] || fail "$1 changed ada's jazz opt-in"
  page "${link[grace]}" "$tmp/check.html"
  [ "$(state_of "$tmp/check.html" "${rec[grace]}")" = active ] || fail "$1 changed grace's opt-in"
}
# flip S: S with one character near its end changed (inside a link's
# token, well before the last character, whose low bits may be unused).
flip() {
  local i=$((${#1} - 8)) d=A
  [ "${1:$i:1}" != A ] || d=B
  echo "${1:0:$i}$d${1:$((i + 1))}"
}
# error_page FILE: a plain page of our own: no consent cards, no forms.
error_page() {
  grep -q '<h1>' "$1" && ! grep -q 'class="consent"' "$1" && ! grep -q '<form' "$1"
}
forged=$(flip "$tok_ada")
code=$(web GET "$base/c/$forged" "$tmp/forged.html")
[ "$code" = 404 ] && error_page "$tmp/forged.html" && grep -q 'Link not valid' "$tmp/forged.html" ||
  fail "a forged link answered $code: $(head -c 400 "$tmp/forged.html")"
grep -qF "${rec[ada_b]}" "$tmp/forged.html" && fail "the forged link's page names a record"
code=$(web POST "$base/c/$forged/withdraw" "$tmp/out.html" -d "csrf=$csrf_ada&record=${rec[ada_b]}")
[ "$code" = 404 ] && error_page "$tmp/out.html" || fail "a withdraw through a forged link answered $code"
# Ada's token with its expiry moved (the tag no longer matches).
retimed=$(util retime "$tok_ada")
code=$(web GET "$base/c/$retimed" "$tmp/out.html")
[ "$code" = 404 ] && error_page "$tmp/out.html" || fail "a link with a moved expiry answered $code"
code=$(web GET "$base/c/not-a-token" "$tmp/out.html")
[ "$code" = 404 ] && error_page "$tmp/out.html" || fail "a malformed link answered $code"
# Grace's link and csrf on ada's record.
code=$(web POST "${link[grace]}/withdraw" "$tmp/out.html" -H "Origin: $base" \
  -d "csrf=$csrf_grace&record=${rec[ada_b]}")
[ "$code" = 404 ] && error_page "$tmp/out.html" ||
  fail "grace's link withdrawing ada's opt-in answered $code: $(head -c 400 "$tmp/out.html")"
# Ada's link with grace's csrf value.
code=$(web POST "${link[ada_f]}/withdraw" "$tmp/out.html" -d "csrf=$csrf_grace&record=${rec[ada_b]}")
[ "$code" = 403 ] && error_page "$tmp/out.html" || fail "another link's csrf answered $code"
# Cross-site: the right csrf from another origin, or flagged by the browser.
code=$(web POST "${link[ada_f]}/withdraw" "$tmp/out.html" -H 'Origin: https://evil.example' \
  -d "csrf=$csrf_ada&record=${rec[ada_b]}")
[ "$code" = 403 ] && error_page "$tmp/out.html" || fail "a cross-site POST answered $code"
code=$(web POST "${link[ada_f]}/withdraw" "$tmp/out.html" -H 'Sec-Fetch-Site: cross-site' \
  -d "csrf=$csrf_ada&record=${rec[ada_b]}")
[ "$code" = 403 ] || fail "a POST flagged cross-site answered $code"
code=$(web POST "${link[ada_f]}/withdraw" "$tmp/out.html" -H 'Origin: null' \
  -d "csrf=$csrf_ada&record=${rec[ada_b]}")
[ "$code" = 403 ] || fail "a POST from an opaque origin answered $code"
code=$(web POST "${link[ada_f]}/erase" "$tmp/out.html" -H 'Origin: https://evil.example' \
  -d "csrf=$csrf_ada&confirm=yes")
[ "$code" = 403 ] || fail "a cross-site erase answered $code"
# No csrf field, an empty one, or a GET.
code=$(web POST "${link[ada_f]}/withdraw" "$tmp/out.html" -H "Origin: $base" -d "record=${rec[ada_b]}")
[ "$code" = 403 ] && error_page "$tmp/out.html" || fail "a POST without csrf answered $code"
code=$(web POST "${link[ada_f]}/withdraw" "$tmp/out.html" -d "csrf=&record=${rec[ada_b]}")
[ "$code" = 403 ] || fail "a POST with an empty csrf answered $code"
code=$(web POST "${link[ada_f]}/erase" "$tmp/out.html" -H "Origin: $base" -d "confirm=yes")
[ "$code" = 403 ] || fail "an erase without csrf answered $code"
code=$(web GET "${link[ada_f]}/withdraw?csrf=$csrf_ada&record=${rec[ada_b]}" "$tmp/out.html")
[ "$code" = 405 ] || fail "a GET of the withdraw action answered $code"
code=$(web POST "${link[ada_f]}/erase" "$tmp/out.html" -H "Origin: $base" -d "csrf=$csrf_ada")
[ "$code" = 400 ] || fail "an erase without the confirmation answered $code"
# The same through permit.v1.Buyer on the reseller's local API.
api_r=127.0.0.1:$($py -c 'import json,sys; print(json.load(open(sys.argv[1]))["api"])' "$tmp/$R/ports.json")
util buyer "$api_r" list "$tok_ada" >"$tmp/consents" 2>"$tmp/err" || fail "ListConsents: $(cat "$tmp/err")"
$py - "$tmp/consents" "${rec[ada_f]}" "${rec[ada_b]}" <<'PY' || fail "ListConsents of ada: $(cat "$tmp/consents")"
import json, sys
got = {c["record"]: (c["venue"], c["list"], c["state"]) for c in map(json.loads, open(sys.argv[1]))}
assert got == {sys.argv[2]: ("fillmore.example", "newsletter", "withdrawn"),
               sys.argv[3]: ("bluenote.example", "jazz", "active")}, got
PY
for how in "list $forged" "erase $forged" "withdraw $forged ${rec[ada_b]}"; do
  # shellcheck disable=SC2086  # $how is words on purpose
  util buyer "$api_r" $how >"$tmp/out" 2>/dev/null && fail "Buyer ${how%% *} took a forged token"
  grep -q '^status PERMISSION_DENIED$' "$tmp/out" || fail "Buyer ${how%% *} with a forged token: $(cat "$tmp/out")"
done
util buyer "$api_r" withdraw "${link[grace]##*/c/}" "${rec[ada_b]}" >"$tmp/out" 2>/dev/null &&
  fail "Buyer/Withdraw took grace's token for ada's opt-in"
grep -q '^status NOT_FOUND$' "$tmp/out" || fail "Buyer/Withdraw of another buyer's opt-in: $(cat "$tmp/out")"
unchanged "the refused requests"
lap
ok "forged, retimed and malformed links (404), another buyer's link (404), cross-site posts and bad csrf (403), and the same through Buyer/* (PERMISSION_DENIED, NOT_FOUND) change nothing; markup in a title and notice is shown as text ($lap)"

# ---- 4. unsubscribes at the venues reach the consent centre ----
# (The sealed bytes of grace's first opt-in and of miles's, for the
# erasure below.)
proof_of grace $F grace@example.org newsletter
proof_of miles $B miles@example.net jazz
ctl unsubscribe --data "$tmp/$F" --email ' Grace@Example.ORG ' --list newsletter >"$tmp/unsub" 2>&1 ||
  fail "permitctl unsubscribe: $(cat "$tmp/unsub")"
grep -q '1 opt-in withdrawn' "$tmp/unsub" || fail "permitctl unsubscribe said: $(cat "$tmp/unsub")"
# A mistyped list is an error, not "nothing to do".
rc=0; ctl unsubscribe --data "$tmp/$F" --email ada@example.com --list newsleter \
  >"$tmp/unsub2" 2>&1 || rc=$?
[ "$rc" = 1 ] && grep -q 'NOT_FOUND.*no list "newsleter"' "$tmp/unsub2" ||
  fail "unsubscribe from an unknown list: exit $rc, $(cat "$tmp/unsub2")"
unsub_t=$(now_ms)
not_exported $F newsletter grace@example.org || fail "$F still exports grace after unsubscribe"
until_ok 15 "grace's consent page does not show the unsubscribe" \
  state_is "${link[grace]}" "${rec[grace]}" "unsubscribed at the venue"
unsub_ms=$(($(now_ms) - unsub_t))
grep -q '"event":"sync.unsubscribed"' "$tmp/$R.log" || fail "no sync.unsubscribed at $R"
ctl unsubscribe --data "$tmp/$F" --email grace@example.org --list newsletter >"$tmp/unsub" 2>&1 ||
  fail "a second unsubscribe failed: $(cat "$tmp/unsub")"
grep -q 'nothing to do' "$tmp/unsub" || fail "a second unsubscribe said: $(cat "$tmp/unsub")"

# Miles: the one-click URL from bluenote's export.
export_list $B jazz || fail "export at $B"
url=$(grep '"email":"miles@example.net"' "$tmp/$B.jazz" | grep -o '"unsubscribe_url":"[^"]*"' |
  sed 's/.*":"//; s/"$//')
case $url in "https://127.0.0.1:${pub[$B]}/u/jazz/$R/"?*) ;; *) fail "miles's URL: $url" ;; esac
code=$(web GET "$url" "$tmp/u.html")
[ "$code" = 200 ] && grep -q 'name="List-Unsubscribe" value="One-Click"' "$tmp/u.html" ||
  fail "GET of the one-click URL answered $code: $(head -c 400 "$tmp/u.html")"
code=$(curl -sk --http2 --max-time 15 --head -o /dev/null -w '%{http_code}' "$url")
[ "$code" = 200 ] || fail "HEAD of the one-click URL answered $code"
code=$(web POST "$url" "$tmp/u2.html" -d 'List-Unsubscribe=Maybe')
[ "$code" = 400 ] || fail "a POST without One-Click answered $code"
code=$(web POST "$(flip "$url")" "$tmp/u2.html" -d 'List-Unsubscribe=One-Click')
[ "$code" = 404 ] || fail "a forged one-click URL answered $code"
exported $B jazz miles@example.net || fail "a GET, HEAD or bad POST of the one-click URL unsubscribed miles"
state_is "${link[miles]}" "${rec[miles]}" active || fail "miles is no longer active at $R after a GET"
code=$(web POST "$url" "$tmp/u3.html" -d 'List-Unsubscribe=One-Click')
oneclick_t=$(now_ms)
[ "$code" = 200 ] && grep -q 'You are unsubscribed' "$tmp/u3.html" ||
  fail "the one-click POST answered $code: $(head -c 400 "$tmp/u3.html")"
not_exported $B jazz miles@example.net || fail "$B still exports miles after the one-click POST"
until_ok 15 "miles's consent page does not show the one-click unsubscribe" \
  state_is "${link[miles]}" "${rec[miles]}" "unsubscribed at the venue"
oneclick_ms=$(($(now_ms) - oneclick_t))
code=$(web POST "$url" "$tmp/u3.html" -d 'List-Unsubscribe=One-Click')
[ "$code" = 200 ] || fail "a second one-click POST answered $code"
page "${link[miles]}" "$tmp/miles.html"
grep -q "data-record=\"${rec[miles]}\" data-state=\"unsubscribed at the venue\"" "$tmp/miles.html" &&
  ! grep -q 'class="withdraw"' "$tmp/miles.html" || fail "miles's page still offers to leave"

# The same order again is refused; a new order is a new opt-in.
rc=0
ctl optin --data "$tmp/$R" --order G-1 --email grace@example.org --given Grace --family Hopper \
  --venue $F --list newsletter --notice-version 1 >"$tmp/out" 2>&1 || rc=$?
[ "$rc" = 1 ] && grep -q FAILED_PRECONDITION "$tmp/out" || fail "replaying grace's order: rc $rc $(cat "$tmp/out")"
optin grace2 G-2 grace@example.org Grace Hopper $F newsletter
[ "${rec[grace2]}" != "${rec[grace]}" ] || fail "the new order reused the old record"
until_ok 15 "$F does not list grace again" exported $F newsletter grace@example.org
page "${link[grace2]}" "$tmp/grace2.html"
[ "$(state_of "$tmp/grace2.html" "${rec[grace]}")" = "unsubscribed at the venue" ] &&
  [ "$(state_of "$tmp/grace2.html" "${rec[grace2]}")" = active ] ||
  fail "grace's page after the new order: $(grep -o 'data-record="[^"]*" data-state="[^"]*"' "$tmp/grace2.html")"
lap
ok "permitctl unsubscribe reached $R in $unsub_ms ms, the one-click POST in $oneclick_ms ms; GET/HEAD/bad POSTs changed nothing; the old order is FAILED_PRECONDITION, a new one CREATED and listed ($lap)"

# ---- 5. erase me everywhere ----
# Four buyers go: nina (active at both venues) through the page; grace
# (unsubscribed at the venue, then a new opt-in on the same list), ada
# (withdrawn at one venue, active at the other) and miles (unsubscribed by
# one-click) through Buyer/Erase.  Ella stays.  The sealed contact bytes
# of their opt-ins come from the venues' proofs.
proof_of grace2 $F grace@example.org newsletter
proof_of nina_f $F nina@example.com newsletter
proof_of nina_b $B nina@example.com jazz
proof_of ada_b $B ada@example.com jazz
proof_of ella $B ella@example.com jazz
gone="nina_f nina_b grace grace2 ada_f ada_b miles"
[ "${ct[grace]}" != "${ct[grace2]}" ] || fail "grace's two opt-ins have the same sealed bytes"
dirs=("$tmp/$R" "$tmp/$F" "$tmp/$B")
for k in $gone; do
  util find "${ct[$k]}" "${dirs[@]}" >"$tmp/hits" || fail "the search cannot find $k's sealed contact before erasure"
  grep -q "^$tmp/$R/" "$tmp/hits" || fail "$k's sealed contact is not in $R's directory before erasure"
done
for k in $gone; do
  case $k in *_b | miles) v=$B ;; *) v=$F ;; esac
  grep -q "^$tmp/$v/" <(util find "${ct[$k]}" "$tmp/$v") || fail "$k's sealed contact is not at $v"
done

page "${link[nina_f]}" "$tmp/nina.html"
csrf_nina=$(csrf_of "$tmp/nina.html")
[ "$(state_of "$tmp/nina.html" "${rec[nina_f]}")" = active ] &&
  [ "$(state_of "$tmp/nina.html" "${rec[nina_b]}")" = active ] || fail "nina's page before erasure"
code=$(web POST "${link[nina_f]}/erase-confirm" "$tmp/confirm.html" -H "Origin: $base" -d "csrf=$csrf_nina")
[ "$code" = 200 ] && grep -q 'name="confirm" value="yes"' "$tmp/confirm.html" ||
  fail "erase-confirm answered $code: $(head -c 400 "$tmp/confirm.html")"
exported $F newsletter nina@example.com || fail "the confirmation page alone erased nina"
erase_t=$(now_ms)
code=$(web POST "${link[nina_f]}/erase" "$tmp/erased.html" -H "Origin: $base" -d "csrf=$csrf_nina&confirm=yes")
[ "$code" = 303 ] && grep -qi "^location: /c/.*?m=erased" "$tmp/erased.html.h" ||
  fail "erase answered $code: $(cat "$tmp/erased.html.h")"
until_ok 15 "$F still exports nina after erasure" not_exported $F newsletter nina@example.com
until_ok 15 "$B still exports nina after erasure" not_exported $B jazz nina@example.com
erase_ms=$(($(now_ms) - erase_t))
page "${link[nina_b]}" "$tmp/nina.html"
grep -q 'class="empty"' "$tmp/nina.html" && ! grep -q 'class="consent"' "$tmp/nina.html" ||
  fail "nina's page after erasure still lists: $(grep -o 'data-record="[^"]*" data-state="[^"]*"' "$tmp/nina.html")"
# Grace (one opt-in unsubscribed at the venue, a newer one active, on the
# same list) erases herself through Buyer/Erase.
tok_grace=${link[grace2]##*/c/}
util buyer "$api_r" list "$tok_grace" >"$tmp/consents" 2>"$tmp/err" || fail "ListConsents: $(cat "$tmp/err")"
[ "$(grep -c '"state": "unsubscribed"' "$tmp/consents")" = 1 ] &&
  [ "$(grep -c '"state": "active"' "$tmp/consents")" = 1 ] || fail "grace's consents: $(cat "$tmp/consents")"
# erase TOKEN ANSWER: Buyer/Erase, and the buyer has no consents left.
erase() {
  util buyer "$api_r" erase "$1" >"$tmp/out" 2>"$tmp/err" || fail "Buyer/Erase: $(cat "$tmp/err")"
  grep -qx "$2" "$tmp/out" || fail "Buyer/Erase answered $(cat "$tmp/out"), not $2"
  util buyer "$api_r" list "$1" >"$tmp/consents" 2>"$tmp/err" || fail "ListConsents: $(cat "$tmp/err")"
  [ ! -s "$tmp/consents" ] || fail "consents after erasure: $(cat "$tmp/consents")"
}
erase "$tok_grace" '{"records": 2, "venues": 1}'
erase "$tok_ada" '{"records": 2, "venues": 2}'
erase "${link[miles]##*/c/}" '{"records": 1, "venues": 1}'
until_ok 15 "$F still exports grace after Buyer/Erase" not_exported $F newsletter grace@example.org
until_ok 15 "$B still exports ada after Buyer/Erase" not_exported $B jazz ada@example.com
# Bluenote's mailing tool watches its changes: each erasure comes with the
# address, once, so that the tool can delete it; then it is gone.
# (Fillmore has no watcher: its erased addresses wait, sealed under
# one-time keys, for one, at most FAREWELL_KEEP_MS.)
api_b=$($py -c 'import json,sys; print(json.load(open(sys.argv[1]))["api"])' "$tmp/$B/ports.json")
for w in 1 2; do
  util watch "127.0.0.1:$api_b" "${rec[nina_b]}" "${rec[ada_b]}" "${rec[miles]}" \
    >"$tmp/watch$w" 2>"$tmp/watch.err" ||
    fail "WatchContacts $w: $(cat "$tmp/watch.err") $(cat "$tmp/watch$w")"
done
$py - "$tmp/watch1" "$tmp/watch2" "${rec[nina_b]}" "${rec[ada_b]}" "${rec[miles]}" <<'PY' ||
import json, sys
first, second = ([json.loads(l) for l in open(f)] for f in sys.argv[1:3])
gone = dict(zip(sys.argv[3:], ["nina@example.com", "ada@example.com", "miles@example.net"]))
for rec, email in gone.items():
    erased = [c for c in first if c["kind"] == "erased" and c["record"] == rec]
    assert len(erased) == 1 and erased[0]["email"] == email, erased
    again = [c for c in second if c["kind"] == "erased" and c["record"] == rec]
    assert len(again) == 1 and again[0]["email"] == "", again
    assert all(c["email"] != email for c in second), second
miles = sys.argv[5]
unsub = [c for c in first if c["kind"] == "unsubscribed" and c["record"] == miles]
assert len(unsub) == 1, unsub
PY
  fail "WatchContacts at $B: $(cat "$tmp/watch1") / $(cat "$tmp/watch2")"
for e in nina@example.com:newsletter:$F grace@example.org:newsletter:$F ada@example.com:jazz:$B; do
  IFS=: read -r em li ve <<<"$e"
  rc=0
  ctl proof --data "$tmp/$ve" --email "$em" --list "$li" --out "$tmp/x.proof" 2>"$tmp/err" || rc=$?
  [ "$rc" = 1 ] || fail "$ve still proves $em's opt-in after erasure"
done
[ "$(emails $F newsletter)" = '' ] &&
  [ "$(emails $B jazz)" = '"email":"ella@example.com" ' ] ||
  fail "after erasure: $F $(emails $F newsletter), $B $(emails $B jazz)"

# Ella's links, to try after the rotation (6. below).
page "${link[ella]}" "$tmp/ella.html"
csrf_ella=$(csrf_of "$tmp/ella.html")
ella_url=$(grep '"email":"ella@example.com"' "$tmp/$B.jazz" | grep -o '"unsubscribe_url":"[^"]*"' |
  sed 's/.*":"//; s/"$//')
[ -n "$csrf_ella" ] && [ -n "$ella_url" ] || fail "ella's csrf or one-click URL"

for n in $nodes; do stop $n; done
for n in $nodes; do
  ctl compact --data "$tmp/$n" >/dev/null 2>"$tmp/err" || fail "compact $n: $(cat "$tmp/err")"
done
for s in nina@example.com NINA@EXAMPLE.COM Simone grace@example.org Hopper \
  ada@example.com Lovelace miles@example.net; do
  if grep -rlaF "$s" "${dirs[@]}" >"$tmp/hits"; then
    fail "\"$s\" is in plaintext in: $(cat "$tmp/hits")"
  fi
done
for k in $gone; do
  if util find "${ct[$k]}" "${dirs[@]}" >"$tmp/hits"; then
    fail "$k's sealed contact is still in: $(cat "$tmp/hits")"
  fi
done
# The control: a buyer who stays is still found by the same search.
util find "${ct[ella]}" "$tmp/$R" >/dev/null && util find "${ct[ella]}" "$tmp/$B" >/dev/null ||
  fail "the search no longer finds ella's sealed contact: it would find nothing"
lap
ok "erase through the page (confirm, then erase) reached both venues in $erase_ms ms; Buyer/Erase erased 3 more buyers (withdrawn, unsubscribed, re-opted-in); $B's WatchContacts handed over each address once; after compaction no directory holds their emails, names or any of their 7 sealed contacts (ella's still found) ($lap)"

# Rotating the link secrets while the nodes are down (6. below).
for n in $R $B; do
  ctl rotate-link-secret --data "$tmp/$n" >"$tmp/out" 2>&1 || fail "rotate-link-secret $n: $(cat "$tmp/out")"
done
for n in $nodes; do start $n; done

proof_of ella2 $B ella@example.com jazz
[ "${ct[ella2]}" = "${ct[ella]}" ] || fail "ella's record at $B changed"
ctl verify-proof "$tmp/ella2.proof" --issuer-card "$tmp/$R.card" >"$tmp/verified" 2>"$tmp/err" ||
  fail "ella's proof no longer verifies: $(cat "$tmp/err")"
optin lena L-1 lena@example.com Lena Horne $F newsletter
optin lena_b L-2 lena@example.com Lena Horne $B jazz
until_ok 20 "$F did not sync a new opt-in after the erasure" exported $F newsletter lena@example.com
until_ok 20 "$B did not sync a new opt-in after the erasure" exported $B jazz lena@example.com
# Lena's entry at fillmore comes after the pruned ones: its inclusion
# proof goes through their leaf hashes.
proof_of lena $F lena@example.com newsletter
ctl verify-proof "$tmp/lena.proof" --issuer-card "$tmp/$R.card" >/dev/null 2>"$tmp/err" ||
  fail "lena's proof at $F does not verify: $(cat "$tmp/err")"
for n in $F $B; do
  ctl peer list --data "$tmp/$n" >"$tmp/peers" 2>&1 || fail "peer list $n"
  ! grep -qi 'stopped\|equivocation' "$tmp/peers" || fail "$n's log from $R: $(cat "$tmp/peers")"
done
lap
ok "after restart the logs verify: ella's and a new buyer's proofs pass verify-proof, new opt-ins sync to both venues ($lap)"

# ---- 6. rotated link secrets void old links ----
code=$(web GET "${link[ella]}" "$tmp/old.html")
[ "$code" = 404 ] && error_page "$tmp/old.html" || fail "an old consent link after rotation answered $code"
code=$(web POST "${link[ella]}/withdraw" "$tmp/old.html" -H "Origin: $base" -d "csrf=$csrf_ella&record=${rec[ella]}")
[ "$code" = 404 ] || fail "a withdraw through an old link after rotation answered $code"
util buyer "$api_r" list "${link[ella]##*/c/}" >"$tmp/out" 2>/dev/null && fail "Buyer/ListConsents took an old token"
grep -q '^status PERMISSION_DENIED$' "$tmp/out" || fail "Buyer/ListConsents with an old token: $(cat "$tmp/out")"
code=$(web POST "$ella_url" "$tmp/old.html" -d 'List-Unsubscribe=One-Click')
[ "$code" = 404 ] || fail "an old one-click URL of $B after rotation answered $code"
exported $B jazz ella@example.com || fail "an old link after rotation unsubscribed ella"
page "${link[lena]}" "$tmp/lena.html"
[ "$(state_of "$tmp/lena.html" "${rec[lena]}")" = active ] || fail "a new link after rotation"
new_url=$(grep '"email":"lena@example.com"' "$tmp/$B.jazz" | grep -o '"unsubscribe_url":"[^"]*"' |
  sed 's/.*":"//; s/"$//')
code=$(web GET "$new_url" "$tmp/f.html")
[ "$code" = 200 ] || fail "$B's new one-click URL answered $code"
# Fillmore kept its secret: its URLs still work.
export_list $F newsletter || fail "export at $F"
furl=$(grep '"email":"lena@example.com"' "$tmp/$F.newsletter" | grep -o '"unsubscribe_url":"[^"]*"' |
  sed 's/.*":"//; s/"$//')
code=$(web GET "$furl" "$tmp/f.html")
[ "$code" = 200 ] || fail "$F's one-click URL answered $code"
lap
ok "after rotate-link-secret old consent links, their forms and Buyer calls, and old one-click URLs are refused; new ones and unrotated $F's work ($lap)"

# ---- "leave this list" leaves it, whatever orders joined it ----
optin lena2 L-3 lena@example.com Lena Horne $F newsletter
page "${link[lena2]}" "$tmp/lena2.html"
[ "$(state_of "$tmp/lena2.html" "${rec[lena]}")" = active ] &&
  [ "$(state_of "$tmp/lena2.html" "${rec[lena2]}")" = active ] || fail "lena's two opt-ins are not both active"
util buyer "$api_r" withdraw "${link[lena2]##*/c/}" "${rec[lena]}" >"$tmp/out" 2>"$tmp/err" ||
  fail "Buyer/Withdraw: $(cat "$tmp/err")"
page "${link[lena2]}" "$tmp/lena2.html"
[ "$(state_of "$tmp/lena2.html" "${rec[lena]}")" = withdrawn ] &&
  [ "$(state_of "$tmp/lena2.html" "${rec[lena2]}")" = withdrawn ] ||
  fail "leaving the list left an opt-in of another order active"
until_ok 10 "$F still exports lena after she left the list" not_exported $F newsletter lena@example.com
exported $B jazz lena@example.com || fail "leaving $F's list touched $B's"
lap
ok "leaving a list withdraws every active opt-in of the buyer on it (two orders), not the other venue's ($lap)"

for n in $nodes; do stop $n; done
lap
ok "all nodes stopped cleanly ($lap)"
echo "total $(($(now_ms) - t0)) ms"
echo "$pass_count passed, 0 failed"
