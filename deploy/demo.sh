#!/usr/bin/env bash
# The main job: a demo federation on 127.0.0.1.  A reseller
# (tixly.example) and two venues (fillmore.example, bluenote.example) run
# as three permitd processes with their data under one directory
# (./permit-demo, or $PERMIT_DEMO_DIR); they are pinned to each other, the
# venues define their lists, buyers opt in through the reseller's real
# Checkout API, and each venue's node pulls, verifies and decrypts only its
# own buyers.  Then one buyer leaves a list through the reseller's
# consent centre (HTTPS, HTTP/2), and the venue's list drops them.  The
# nodes keep running until Ctrl-C.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
demo="${PERMIT_DEMO_DIR:-$PWD/permit-demo}"

bash "$root/deploy/install-deps.sh" demo
cmake -S "$root" -B "$root/build" -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build "$root/build" -j "$(nproc)" >/dev/null
permitd="$root/build/permitd"
ctl="$root/build/permitctl"

say() { printf '\n== %s\n' "$*"; }
free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

pids=()
stop_all() {
  trap - INT TERM EXIT
  [ ${#pids[@]} -eq 0 ] && return
  say "stopping the nodes"
  kill -TERM "${pids[@]}" 2>/dev/null || true
  wait "${pids[@]}" 2>/dev/null || true
  echo "stopped; the data stays in $demo (the next run moves it to $demo.previous)"
}
trap stop_all INT TERM EXIT

# Each run starts afresh (a second run over the first's data would replay
# orders a buyer has since withdrawn, which the reseller rightly refuses).
# The previous run's data is kept beside, as $demo.previous.
if [ -e "$demo" ] && [ -n "$(ls -A "$demo" 2>/dev/null)" ]; then
  if [ ! -f "$demo/tixly.example/permit.conf" ]; then
    echo "$demo exists and does not hold a demo's data: set PERMIT_DEMO_DIR" \
      "to another directory" >&2
    exit 1
  fi
  rm -rf "$demo.previous"
  mv "$demo" "$demo.previous"
  echo "the previous run's data is now in $demo.previous"
fi
mkdir -p "$demo"
nodes=(tixly.example fillmore.example bluenote.example)
roles=(issuer audience audience)
say "data directory: $demo"
for i in 0 1 2; do
  n=${nodes[$i]}
  if [ ! -f "$demo/$n/permit.conf" ]; then
    "$ctl" init --name "$n" --role "${roles[$i]}" --data "$demo/$n" \
      --peer-addr "127.0.0.1:$(free_port)" --api-addr "127.0.0.1:$(free_port)" \
      --public-addr "127.0.0.1:$(free_port)" | sed "s/^/  /"
  fi
done

say "starting the three nodes (logs in $demo/<node>.log)"
for n in "${nodes[@]}"; do
  rm -f "$demo/$n/ports.json"
  "$permitd" --config "$demo/$n/permit.conf" 2>>"$demo/$n.log" &
  pids+=($!)
done
for n in "${nodes[@]}"; do
  for _ in $(seq 200); do [ -s "$demo/$n/ports.json" ] && break; sleep 0.05; done
  [ -s "$demo/$n/ports.json" ] || { echo "$n did not start: see $demo/$n.log"; exit 1; }
  echo "  $n up: $(cat "$demo/$n/ports.json")"
done

say "venues define their lists"
printf 'Yes, send me news and presales from The Fillmore. I can unsubscribe at any time.' >"$demo/fillmore-notice.txt"
printf 'Send me the Blue Note jazz newsletter. Unsubscribe with one click.' >"$demo/bluenote-notice.txt"
"$ctl" list define --data "$demo/fillmore.example" --id newsletter \
  --title "The Fillmore newsletter" --notice-file "$demo/fillmore-notice.txt"
"$ctl" list define --data "$demo/bluenote.example" --id jazz \
  --title "Blue Note jazz letter" --notice-file "$demo/bluenote-notice.txt"

say "exchanging node cards (each operator pins the others' keys)"
for n in "${nodes[@]}"; do "$ctl" card --data "$demo/$n" >"$demo/$n.card.json"; done
"$ctl" peer add "$demo/fillmore.example.card.json" --data "$demo/tixly.example"
"$ctl" peer add "$demo/bluenote.example.card.json" --data "$demo/tixly.example"
"$ctl" peer add "$demo/tixly.example.card.json" --data "$demo/fillmore.example"
"$ctl" peer add "$demo/tixly.example.card.json" --data "$demo/bluenote.example"

say "the reseller fetches each venue's signed catalog"
for v in fillmore.example bluenote.example; do
  for _ in $(seq 300); do
    "$ctl" offers --data "$demo/tixly.example" --venue "$v" >"$demo/offers-$v.txt" 2>/dev/null &&
      [ -s "$demo/offers-$v.txt" ] && break
    sleep 0.1
  done
  [ -s "$demo/offers-$v.txt" ] || { echo "no catalog from $v: see $demo/*.log"; exit 1; }
  sed "s/^/  $v: /" "$demo/offers-$v.txt"
done

say "buyers tick the box at checkout (Checkout/RecordOptIn)"
optin() { # order email given family venue list
  local ver
  ver=$(sed -nE "s/^$6 .* notice v([0-9]+):.*/\1/p" "$demo/offers-$5.txt")
  "$ctl" optin --data "$demo/tixly.example" --order "$1" --email "$2" \
    --given "$3" --family "$4" --venue "$5" --list "$6" --notice-version "$ver" \
    >"$demo/optin-$1.txt" || true
  sed "s/^/  $2 -> $5: /" "$demo/optin-$1.txt"
}
optin T-1001 ada@example.com Ada Lovelace fillmore.example newsletter
optin T-1002 grace@example.org Grace Hopper fillmore.example newsletter
optin T-1003 "Miles.Davis@Example.net" Miles Davis bluenote.example jazz
optin T-1004 ada@example.com Ada Lovelace bluenote.example jazz
optin T-1001 ada@example.com Ada Lovelace fillmore.example newsletter

say "each venue exports the list its node pulled and verified"
for pair in fillmore.example:newsletter:2 bluenote.example:jazz:2; do
  IFS=: read -r v list want <<<"$pair"
  for _ in $(seq 100); do
    "$ctl" contacts export --data "$demo/$v" --list "$list" --out "$demo/$v-$list.csv" 2>/dev/null &&
      [ "$(($(wc -l <"$demo/$v-$list.csv") - 1))" -ge "$want" ] && break
    sleep 0.1
  done
  echo "-- $v, list $list ($demo/$v-$list.csv):"
  cat "$demo/$v-$list.csv"
done

say "Ada leaves The Fillmore's list in the reseller's consent centre"
link=$(sed -nE 's/^consent link: //p' "$demo/optin-T-1001.txt")
record=$(sed -nE 's/^(created|already active:) record ([0-9a-f]+).*/\2/p' "$demo/optin-T-1001.txt" | head -1)
origin=$(sed -E 's#^(https://[^/]+)/.*#\1#' <<<"$link")
echo "  her consent link (from the confirmation email): $link"
# The self-signed certificate of the demo: -k.  What a browser does: GET
# the page, POST its form (same origin, with the page's csrf field).
curl -sk --http2 "$link" -o "$demo/consent-before.html"
csrf=$(sed -nE 's/.*name="csrf" value="([^"]+)".*/\1/p' "$demo/consent-before.html" | head -1)
echo "  the page lists: $(grep -o 'data-record="[0-9a-f]*" data-state="[^"]*"' "$demo/consent-before.html" | sed 's/data-record="\([0-9a-f]\{8\}\)[^"]*"/record \1.../' | tr '\n' ';')"
code=$(curl -sk --http2 -o /dev/null -w '%{http_code}' -H "Origin: $origin" \
  --data-urlencode "csrf=$csrf" --data-urlencode "record=$record" "$link/withdraw")
echo "  withdraw button pressed: HTTP $code (303: done, back to the page)"
for _ in $(seq 100); do
  "$ctl" contacts export --data "$demo/fillmore.example" --list newsletter \
    --out "$demo/fillmore.example-newsletter-after.csv" 2>/dev/null &&
    ! grep -q '^ada@example.com,' "$demo/fillmore.example-newsletter-after.csv" && break
  sleep 0.05
done
echo "-- fillmore.example, list newsletter, before:"
cut -d, -f1-3,8 "$demo/fillmore.example-newsletter.csv"
echo "-- and after Ada's withdrawal reached the venue ($demo/fillmore.example-newsletter-after.csv):"
cut -d, -f1-3,8 "$demo/fillmore.example-newsletter-after.csv"
curl -sk --http2 "$link" -o "$demo/consent-after.html"
echo "  her consent page now: $(grep -o 'data-state="[^"]*"' "$demo/consent-after.html" | tr '\n' ' ')"

say "sync state as the reseller sees it"
"$ctl" peer list --data "$demo/tixly.example"

say "the federation is running"
cat <<MSG
Talk to the nodes with permitctl (in $root/build), for example:
  permitctl optin --data $demo/tixly.example --order T-2000 --email you@example.com \\
    --venue fillmore.example --list newsletter --notice-version 1
  permitctl contacts export --data $demo/fillmore.example --list newsletter
  permitctl peer list --data $demo/fillmore.example
  permitctl unsubscribe --data $demo/bluenote.example --email ada@example.com --list jazz
  curl -s --http2-prior-knowledge http://127.0.0.1:$(sed -E 's/.*"api": ([0-9]+).*/\1/' "$demo/tixly.example/ports.json")/metrics
Ada's consent centre (self-signed certificate: accept it in the browser):
  $link
Press Ctrl-C to stop the nodes.
MSG
wait
