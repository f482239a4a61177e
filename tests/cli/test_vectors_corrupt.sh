#!/usr/bin/env bash
# The known-answer tests really compare: each is run against a copy of
# tests/vectors/ with one published answer changed, and must fail.
source "$(dirname "$0")/lib.sh"
: "${TEST_BIN_DIR:?}" "${VECTORS:?}"

# corrupt TEST FILE PYTHON-EXPR: copies the vectors, applies the edit to
# FILE (relative to the vectors dir) and expects TEST to fail on it.
corrupt() {
  local test=$1 file=$2 edit=$3
  local dir="$tmp/v-$test-$RANDOM"
  cp -r "$VECTORS" "$dir"
  /usr/bin/python3 - "$dir/$file" "$edit" <<'PY'
import json, sys
path, edit = sys.argv[1], sys.argv[2]
d = json.load(open(path))
def flip_hex(s):
    return ("1" if s[0] != "1" else "2") + s[1:]
exec(edit)
json.dump(d, open(path, "w"))
PY
  local rc=0
  PERMIT_VECTORS_DIR="$dir" "$TEST_BIN_DIR/$test" >"$tmp/out" 2>&1 || rc=$?
  [ "$rc" != 0 ] || fail "$test passed with a corrupted $file"
  ok "$test fails when $file is corrupted"
}

corrupt test_hpke hpke/rfc9180-base.json \
  'd[1]["encryptions"][0]["ct"] = flip_hex(d[1]["encryptions"][0]["ct"])'
corrupt test_hpke hpke/rfc9180-base.json \
  'd[0]["shared_secret"] = flip_hex(d[0]["shared_secret"])'
corrupt test_wycheproof wycheproof/x25519_test.json \
  't = d["testGroups"][0]["tests"][5]; t["shared"] = flip_hex(t["shared"])'
corrupt test_wycheproof wycheproof/ed25519_test.json \
  't = d["testGroups"][0]["tests"][0]; t["sig"] = flip_hex(t["sig"])'
corrupt test_wycheproof wycheproof/chacha20_poly1305_test.json \
  't = d["testGroups"][0]["tests"][0]; t["tag"] = flip_hex(t["tag"])'
corrupt test_wycheproof wycheproof/hkdf_sha256_test.json \
  't = d["testGroups"][0]["tests"][0]; t["okm"] = flip_hex(t["okm"])'
corrupt test_merkle merkle/inclusion/1/happy-path.json \
  'd["wantErr"] = True'
corrupt test_merkle merkle/consistency/2/happy-path.json \
  'd["size1"] = d["size1"] + 1'

echo "$pass_count passed, 0 failed"
