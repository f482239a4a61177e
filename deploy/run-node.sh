#!/usr/bin/env bash
# The main job (until the demo federation lands): installs what is
# missing, builds if needed, and runs one node whose keys and RocksDB
# database live in ./permit-data (or $PERMIT_DATA).  Ctrl-C stops it.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
bash "$root/deploy/install-deps.sh" build
cmake -S "$root" -B "$root/build" -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build "$root/build" -j "$(nproc)" >/dev/null
exec "$root/build/permitd" --data "${PERMIT_DATA:-./permit-data}" "$@"
