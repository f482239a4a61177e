#!/usr/bin/env bash
# permitctl refuses what it cannot do faithfully, with one line on stderr,
# a non-zero exit and nothing stored or written: init's addresses and
# values that would change permit.conf's structure, init over another
# node's keys or database, --out paths that are not regular files (never
# replaced), a notice file holding a NUL byte; a failed export writes no
# CSV header; and the messages name the OS error, escape a bad name and
# say when the node lacks the role a call needs.
source "$(dirname "$0")/lib.sh"
: "${PERMITD:?}" "${PERMITCTL:?}"
ctl() { "$PERMITCTL" "$@"; }
free_port() {
  /usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}
# refused WANT_RC GREP CMD...: runs permitctl CMD, which must exit WANT_RC
# with exactly one line on stderr matching GREP (fixed string) and
# nothing on stdout.
refused() {
  local want=$1 pat=$2 rc=0
  shift 2
  ctl "$@" >"$tmp/out" 2>"$tmp/err" || rc=$?
  [ "$rc" = "$want" ] || fail "permitctl $* exited $rc, not $want: $(cat "$tmp/err")"
  [ "$(wc -l <"$tmp/err")" = 1 ] || fail "permitctl $*: not one line: $(cat "$tmp/err")"
  grep -qF -- "$pat" "$tmp/err" || fail "permitctl $*: no \"$pat\" in: $(cat "$tmp/err")"
  [ ! -s "$tmp/out" ] || fail "permitctl $* wrote to stdout: $(cat "$tmp/out")"
}

# ---- init: addresses and values ----
nl=$'\n'
for bad in 127.0.0.1:abc :99999 127.0.0.1: :7443 x:y 127.0.0.1 127.0.0.1:65536 \
    127.0.0.1:+80 "127.0.0.1: 80" "a b:1" "127.0.0.1:0${nl}[api]${nl}token = " \
    $'127.0.0.1:0\r' $'host\t:1'; do
  for o in --peer-addr --api-addr --public-addr; do
    args=(--peer-addr 127.0.0.1:0)
    [ "$o" = --peer-addr ] && args=()
    refused 2 "$o \"" init --name n.example --role both --data "$tmp/i" "${args[@]}" "$o" "$bad"
    grep -qF 'is not HOST:PORT' "$tmp/err" || fail "$o: $(cat "$tmp/err")"
    [ ! -e "$tmp/i" ] || fail "init $o \"$bad\" created $tmp/i"
  done
done
# A value longer than a line of permit.conf holds would come back split.
long=$(printf 'h%.0s' $(seq 190))
refused 2 "is not HOST:PORT" init --name n.example --role issuer --data "$tmp/i" \
  --peer-addr "$long:1"
refused 2 "--consent-url must be an https:// URL" init --name n.example --role issuer \
  --data "$tmp/i" --peer-addr 127.0.0.1:0 --consent-url "https://x.example${nl}[api]${nl}token = "
refused 2 "--consent-url" init --name n.example --role issuer --data "$tmp/i" \
  --peer-addr 127.0.0.1:0 --consent-url "https://x.example/a b"
lab=$(printf 'a%.0s' $(seq 63))
refused 2 "--name is longer than 192" init --name "$lab.$lab.$lab.a" --role issuer \
  --data "$tmp/i" --peer-addr 127.0.0.1:0
refused 2 'node name "foo\nbar"' init --name "foo${nl}bar" --role issuer --data "$tmp/i" \
  --peer-addr 127.0.0.1:0
[ ! -e "$tmp/i" ] || fail "a refused init created $tmp/i"
ok "init refuses bad HOST:PORTs, newlines, over-long values; the bad name escaped; nothing created"

ctl init --name edge.example --role both --data "$tmp/edge" --peer-addr '[::1]:65535' \
  --api-addr localhost:0 --public-addr "127.0.0.1:00080" >/dev/null ||
  fail "init refused good addresses"
ctl card --data "$tmp/edge" >/dev/null || fail "the config init wrote does not load"
grep -qx 'endpoint = \[::1\]:65535' "$tmp/edge/permit.conf" || fail "endpoint not written as given"
ok "init takes [::1]:65535, localhost:0 and a port with leading zeros, and the config loads"

# ---- init: another node's keys or database ----
mkdir "$tmp/k"
cp -a "$tmp/edge/keys" "$tmp/k/"
refused 1 "already holds a node's keys or database" init --name k.example --role issuer \
  --data "$tmp/k" --peer-addr 127.0.0.1:0
[ "$(ls -A "$tmp/k")" = keys ] || fail "refused init left: $(ls -A "$tmp/k")"
mkdir -p "$tmp/d/db"
refused 1 "already holds a node's keys or database" init --name d.example --role issuer \
  --data "$tmp/d" --peer-addr 127.0.0.1:0
[ "$(ls -A "$tmp/d")" = db ] || fail "refused init left: $(ls -A "$tmp/d")"
ok "init refuses a data directory holding keys or a database, and writes nothing there"

# ---- two running nodes: a venue and a reseller ----
declare -A pid
start() { start_node "$1" 1; }
V=venue.example R=shop.example
ctl init --name $V --role audience --data "$tmp/$V" --api-addr 127.0.0.1:0 \
  --peer-addr "127.0.0.1:$(free_port)" >/dev/null
ctl init --name $R --role issuer --data "$tmp/$R" --api-addr 127.0.0.1:0 \
  --peer-addr "127.0.0.1:$(free_port)" >/dev/null
start $V
start $R

# ---- messages ----
refused 1 "cannot read $tmp/nonexistent.card: No such file or directory" \
  peer add "$tmp/nonexistent.card" --data "$tmp/$V"
refused 1 "does not have the issuer role" optin --data "$tmp/$V" --order o-1 \
  --email ada@example.com --venue $V --list news --notice-version 1
refused 1 "does not have the audience role" contacts export --data "$tmp/$R" --list news
ok "peer add names the OS error; calls a node's role does not serve say so"

# ---- list define: a NUL byte ----
printf 'Yes, news.\0 And more.' >"$tmp/nul.txt"
refused 1 "nul.txt contains a NUL byte; a notice is UTF-8 text" list define \
  --data "$tmp/$V" --id nul --title T --notice-file "$tmp/nul.txt"
refused 1 "NOT_FOUND" contacts export --data "$tmp/$V" --list nul
ok "a notice file holding a NUL byte is refused; no list was defined"

# ---- contacts export: the header only with an answer ----
refused 1 "NOT_FOUND" contacts export --data "$tmp/$V" --list nolist
refused 1 "NOT_FOUND" contacts export --data "$tmp/$V" --list nolist --format jsonl
pair_up "$tmp/$R" "$tmp/$V" $V
header=$'Email Address,First Name,Last Name,Language,Opt-in Time,Source,Notice Version,Record Id,Unsubscribe URL\r'
ctl contacts export --data "$tmp/$V" --list newsletter >"$tmp/empty.csv" || fail "empty export"
[ "$(cat "$tmp/empty.csv")" = "$header" ] || fail "empty export: $(od -c "$tmp/empty.csv" | head)"
ctl contacts export --data "$tmp/$V" --list newsletter --format jsonl >"$tmp/empty.jsonl" &&
  [ ! -s "$tmp/empty.jsonl" ] || fail "empty jsonl export"
ctl optin --data "$tmp/$R" --order o-1 --email ada@example.com --given Ada --venue $V \
  --list newsletter --notice-version 1 >/dev/null || fail "optin"
deadline=$((SECONDS + 30))
until ctl contacts export --data "$tmp/$V" --list newsletter >"$tmp/one.csv" 2>/dev/null &&
    grep -q '^ada@example.com,Ada,' "$tmp/one.csv"; do
  [ $SECONDS -lt $deadline ] || fail "the venue did not get ada"
  sleep 0.1
done
[ "$(head -1 "$tmp/one.csv")" = "$header" ] && [ "$(wc -l <"$tmp/one.csv")" = 2 ] ||
  fail "export with one contact: $(cat "$tmp/one.csv")"
ok "a failed export prints nothing; the header comes with the first contact or an empty OK"

# ---- --out: only a missing or regular file is (re)written ----
out=$tmp/outdir
mkdir "$out" "$out/sub"
echo keep >"$out/target"
ln -s target "$out/link"
ln -s nowhere "$out/dangling"
mkfifo "$out/fifo"
/usr/bin/python3 -c 'import socket,sys; socket.socket(socket.AF_UNIX).bind(sys.argv[1])' "$out/sock"
kinds="link:-L dangling:-L fifo:-p sock:-S sub:-d" named="links, FIFOs, sockets, directories"
# A device node, where this may make one (it is only ever in $tmp).
if mknod "$out/null" c 1 3 2>/dev/null; then
  kinds="$kinds null:-c" named="$named, devices"
fi
for k in $kinds; do
  f=${k%%:*} t=${k#*:}
  refused 1 "$out/$f exists and is not a regular file" contacts export \
    --data "$tmp/$V" --list newsletter --out "$out/$f"
  test "$t" "$out/$f" || fail "$f was replaced"
  refused 1 "$out/$f exists and is not a regular file" proof --data "$tmp/$V" \
    --email ada@example.com --list newsletter --out "$out/$f"
  test "$t" "$out/$f" || fail "$f was replaced by proof"
done
[ "$(cat "$out/target")" = keep ] || fail "the link's target was written"
(cd "$out" && exec "$PERMITCTL" contacts export --data "$tmp/$V" --list newsletter \
  --out . >"$tmp/out" 2>"$tmp/err") && fail "--out . was taken"
grep -qF ". exists and is not a regular file" "$tmp/err" || fail "--out .: $(cat "$tmp/err")"
refused 2 'does not name a file' contacts export --data "$tmp/$V" --list newsletter --out "$out/sub/"
refused 2 'does not name a file' contacts export --data "$tmp/$V" --list newsletter --out "$out/new/"
refused 2 'does not name a file' proof --data "$tmp/$V" --email ada@example.com \
  --list newsletter --out "$out/sub/"
left=$(cd "$out" && ls -A | grep -v -x -e sub -e target -e link -e dangling -e fifo -e sock -e null || true)
[ -z "$left" ] || fail "refused exports left: $left"
[ -z "$(ls -A "$out/sub")" ] && [ ! -e "$out/new" ] ||
  fail "a refused export wrote something"
echo old >"$out/list.csv"
ctl contacts export --data "$tmp/$V" --list newsletter --out "$out/list.csv" 2>/dev/null ||
  fail "export over a regular file"
cmp -s "$out/list.csv" "$tmp/one.csv" || fail "the regular file was not replaced by the export"
deadline=$((SECONDS + 30))
until ctl proof --data "$tmp/$V" --email ada@example.com --list newsletter \
    --out "$out/list.csv" 2>"$tmp/err"; do
  [ $SECONDS -lt $deadline ] || fail "proof over a regular file: $(cat "$tmp/err")"
  sleep 0.1
done
grep -q '"format": "permit-consent-proof/1"' "$out/list.csv" || fail "proof not written"
ok "--out refuses $named and a trailing '/'; replaces regular files"

# permitd reads at most 199 characters of a config line (libinih): a
# longer one (even a comment, whose tail would read as a line of its
# own) or a NUL byte is refused by name, not misread.
cp "$tmp/$V/permit.conf" "$tmp/long.conf"
printf '# %s\n' "$(head -c 240 /dev/zero | tr '\0' x)" >>"$tmp/long.conf"
rc=0; "$PERMITD" --config "$tmp/long.conf" 2>"$tmp/err" || rc=$?
[ "$rc" != 0 ] && grep -q 'long.conf line [0-9]*: longer than 199 characters' "$tmp/err" ||
  fail "a config line over 199 characters: exit $rc, $(head -c 300 "$tmp/err")"
cp "$tmp/$V/permit.conf" "$tmp/nul.conf"
printf 'x\0y\n' >>"$tmp/nul.conf"
rc=0; "$PERMITD" --config "$tmp/nul.conf" 2>"$tmp/err" || rc=$?
[ "$rc" != 0 ] && grep -q 'nul.conf line [0-9]*: a NUL byte' "$tmp/err" ||
  fail "a config with a NUL byte: exit $rc, $(head -c 300 "$tmp/err")"
ok "permitd refuses config lines it would misread (over 199 characters, NUL)"

stop_node "${pid[$R]}"
stop_node "${pid[$V]}"
echo "$pass_count passed, 0 failed"
