#!/usr/bin/env bash
# Local playground: a Redis master on 6379 with replicas on 6380 and 6381 (no persistence,
# in a temp dir), and redsplit in front of them on 127.0.0.1:7480 (see proxy.yaml).
# Debian, as root (to install Redis if missing). Ctrl-C or SIGTERM stops everything.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v redis-server >/dev/null || ! command -v redis-cli >/dev/null; then
  apt-get update
  DEBIAN_FRONTEND=noninteractive apt-get install -y redis-server redis-tools
  # The package starts a system-wide Redis on 6379; this script runs its own.
  systemctl disable --now redis-server 2>/dev/null || service redis-server stop 2>/dev/null || true
fi

# Every port this script listens on must be free: Redis, the proxy and its admin page.
for port in 6379 6380 6381 7480 7481; do
  if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
    echo "something already listens on port $port; stop it first" >&2
    exit 1
  fi
done

# Build before starting anything (the first build takes minutes).
cargo build --release --bin redsplit

workdir=$(mktemp -d -t redsplit-dev-XXXXXX)
pids=()
cleanup() {
  kill "${pids[@]}" 2>/dev/null || true
  wait 2>/dev/null || true
  rm -rf "$workdir"
}
trap cleanup EXIT
# A signal ends the script through its EXIT trap, which stops every child.
trap 'exit 130' INT
trap 'exit 143' TERM

# start_redis PORT [ARGS...]: a server in the background, logging to $workdir/PORT.log.
start_redis() {
  local port=$1
  shift
  mkdir -p "$workdir/$port"
  redis-server --port "$port" --bind 127.0.0.1 --save "" --appendonly no \
    --dir "$workdir/$port" --logfile "$workdir/$port.log" \
    --repl-diskless-sync yes --repl-diskless-sync-delay 0 "$@" &
  pids+=($!)
}

# wait_for WHAT COMMAND...: polls COMMAND for up to 10 s.
wait_for() {
  local what=$1
  shift
  for _ in $(seq 100); do
    if "$@" >/dev/null 2>&1; then return 0; fi
    sleep 0.1
  done
  echo "timed out waiting for $what (logs in $workdir)" >&2
  exit 1
}

# repl_field PORT FIELD: one field of INFO replication.
repl_field() { redis-cli -p "$1" info replication | tr -d '\r' | sed -n "s/^$2://p"; }
link_up() { [[ $(repl_field "$1" master_link_status) == up ]]; }
caught_up() { (( $(repl_field "$1" slave_repl_offset) >= target )); }

start_redis 6379
wait_for "the master" redis-cli -p 6379 ping
start_redis 6380 --replicaof 127.0.0.1 6379
start_redis 6381 --replicaof 127.0.0.1 6379
wait_for "replica 6380 to connect" link_up 6380
wait_for "replica 6381 to connect" link_up 6381
# A replica reports its link up before the master streams to it (the master waits for
# its first ACK), so also wait until both have processed a write made now.
redis-cli -p 6379 publish redsplit-dev synced >/dev/null
target=$(repl_field 6379 master_repl_offset)
wait_for "replica 6380 to sync" caught_up 6380
wait_for "replica 6381 to sync" caught_up 6381
target/release/redsplit run --config proxy.yaml &
pids+=($!)
wait_for "redsplit" redis-cli -p 7480 ping
echo "Redis master 127.0.0.1:6379, replicas :6380 :6381"
echo "redsplit on 127.0.0.1:7480 (redis-cli -p 7480), status page http://127.0.0.1:7481/"
# Wait on the children (not a foreground command), so a signal is handled at once.
wait -n
echo "a process stopped; stopping the rest" >&2
