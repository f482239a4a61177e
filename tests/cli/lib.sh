# Helpers for the shell tests of the built programs.  Sourced, not run.
set -euo pipefail

fail() { echo "FAIL: $*" >&2; exit 1; }
pass_count=0
ok() { pass_count=$((pass_count + 1)); echo "ok: $*"; }

# wait_for PATTERN FILE [SECONDS]: waits until FILE contains PATTERN.
wait_for() {
  local deadline=$((SECONDS + ${3:-30}))
  until grep -q -- "$1" "$2" 2>/dev/null; do
    [ $SECONDS -lt $deadline ] || return 1
    sleep 0.05
  done
}

# wait_exit PID [SECONDS]: waits for PID (a child of this shell) to end
# and sets $exit_code (124 when it had to be killed at the deadline).
# Not for $(...): a subshell cannot wait for its parent's children.
wait_exit() {
  local deadline=$((SECONDS + ${2:-30}))
  while kill -0 "$1" 2>/dev/null; do
    if [ $SECONDS -ge $deadline ]; then
      kill -9 "$1" 2>/dev/null
      break
    fi
    sleep 0.05
  done
  exit_code=0
  wait "$1" || exit_code=$?
  [ $SECONDS -lt $deadline ] || exit_code=124
}

tmp=$(mktemp -d "${TMPDIR:-/tmp}/permit-cli-XXXXXX")
# stop_node PID: SIGTERM, then the exit code must be 0 (under ASan a leak
# or error report makes it non-zero).
stop_node() {
  kill -TERM "$1" 2>/dev/null || true
  wait_exit "$1"
  [ "$exit_code" = 0 ] || fail "process $1 exited with $exit_code"
}

# start_node NAME WORKERS: starts permitd on $tmp/NAME/permit.conf with
# its log in $tmp/NAME.log and its pid in pid[NAME] (the test declares
# pid with declare -A); returns once this start wrote ports.json.
start_node() {
  rm -f "$tmp/$1/ports.json"
  "$PERMITD" --config "$tmp/$1/permit.conf" --workers "$2" 2>>"$tmp/$1.log" &
  pid[$1]=$!
  wait_for '"event":"node.ready"' "$tmp/$1.log" 30 || fail "$1 did not start: $(tail -5 "$tmp/$1.log")"
  # A restart appends to the log: wait for this start's ports.json.
  local deadline=$((SECONDS + 30))
  until [ -s "$tmp/$1/ports.json" ]; do
    [ $SECONDS -lt $deadline ] || fail "$1 wrote no ports.json"
    sleep 0.05
  done
}

# pair_up RESELLER_DIR VENUE_DIR VENUE: pins a running reseller and venue
# to each other, defines the venue's list "newsletter" and waits until the
# reseller has its catalog.  Needs the test's ctl().
pair_up() {
  ctl card --data "$1" >"$tmp/pair-r.card"
  ctl card --data "$2" >"$tmp/pair-v.card"
  ctl peer add "$tmp/pair-v.card" --data "$1" >/dev/null
  ctl peer add "$tmp/pair-r.card" --data "$2" >/dev/null
  echo "News from the venue." >"$tmp/notice.txt"
  ctl list define --data "$2" --id newsletter --title News \
    --notice-file "$tmp/notice.txt" >/dev/null
  local deadline=$((SECONDS + 30))
  until ctl offers --data "$1" --venue "$3" 2>/dev/null | grep -q newsletter; do
    [ $SECONDS -lt $deadline ] || fail "no catalog of $3 at the reseller"
    sleep 0.1
  done
}

cleanup() {
  local p
  for p in $(jobs -p); do kill -TERM "$p" 2>/dev/null || true; done
  for p in $(jobs -p); do
    local deadline=$((SECONDS + 10))
    while kill -0 "$p" 2>/dev/null && [ $SECONDS -lt $deadline ]; do
      sleep 0.05
    done
    kill -9 "$p" 2>/dev/null || true
    wait "$p" 2>/dev/null || true
  done
  rm -rf "$tmp"
}
trap cleanup EXIT
