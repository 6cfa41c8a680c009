#!/usr/bin/env bash
# Chaos run (not part of CI): builds redsplit for release and runs scripts/chaos.py, which
# puts it behind three Sentinels, a master and two replicas under a read/write load for
# CHAOS_SECS seconds (default 600) of failovers, stopped and restarted replicas,
# connection storms, slow readers and config edits, then reports requests, errors by
# cause, failed reads, peak memory and lost acknowledged writes. See scripts/chaos.py.
#
#   CHAOS_SECS=600 ./scripts/chaos.sh
set -euo pipefail
cd "$(dirname "$0")/.."
for tool in redis-server redis-sentinel python3; do
  command -v "$tool" >/dev/null || { echo "chaos: $tool is needed" >&2; exit 1; }
done
if [[ -z "${REDSPLIT_BIN:-}" ]]; then
  cargo build --release --locked --bin redsplit
fi
# Room for the connection storms (the proxy and the servers inherit it).
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
exec python3 scripts/chaos.py
