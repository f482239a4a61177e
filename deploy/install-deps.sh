#!/usr/bin/env bash
# Installs the Debian 12 packages Permit needs, and nothing else.
#   deploy/install-deps.sh build   what building permitd and permitctl needs
#   deploy/install-deps.sh demo    the build's plus what deploy/demo.sh uses
#   deploy/install-deps.sh test    the build's packages plus the test suite's
# Idempotent: when every package is present it asks dpkg and returns
# without touching apt.
set -euo pipefail

build=(cmake make gcc pkg-config libssl-dev libprotobuf-c-dev libnghttp2-dev
       libevent-dev libinih-dev
       protobuf-c-compiler librocksdb-dev libjansson-dev)
test=(openssl python3)
# The interoperability tests (tests/cli/test_interop_*.sh): grpcio and
# protoc for the Python client, nghttp/h2load and curl for the tools test.
test+=(python3-grpcio python3-protobuf protobuf-compiler nghttp2-client curl)
# The consent-centre browser test (interop/browser) drives Debian's Chromium.
test+=(chromium)
# Issue 6: libFuzzer (clang and its runtime) for the fuzz targets in
# tests/fuzz, an independent HTTP/2 stack (python3-h2) for the hostile
# peers, iproute2 for network namespaces and netem.
test+=(clang libclang-rt-14-dev python3-h2 iproute2)
# Node.js for the grpc-js client: any node already on PATH will do (say
# one from NodeSource, whose nodejs bundles npm and conflicts with
# Debian's npm package); only a machine without node gets Debian's.
if ! command -v node >/dev/null 2>&1; then
  test+=(nodejs npm)
fi

# The demo picks free ports with python3 and presses the consent
# centre's button with curl (HTTP/2).
demo=(python3 curl)

case "${1:-test}" in
  build) want=("${build[@]}") ;;
  demo) want=("${build[@]}" "${demo[@]}") ;;
  test) want=("${build[@]}" "${test[@]}") ;;
  *) echo "usage: $0 [build|demo|test]" >&2; exit 2 ;;
esac

missing=()
for p in "${want[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null |
      grep -q "install ok installed"; then
    missing+=("$p")
  fi
done
[ ${#missing[@]} -eq 0 ] && exit 0

echo "installing: ${missing[*]}" >&2
sudo=()
[ "$(id -u)" -eq 0 ] || sudo=(sudo)
export DEBIAN_FRONTEND=noninteractive
"${sudo[@]}" apt-get update -q
"${sudo[@]}" apt-get install -y -q --no-install-recommends "${missing[@]}"
