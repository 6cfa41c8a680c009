#!/usr/bin/env bash
# Soak run (not part of CI): redsplit, built for release, in front of a Redis master and
# two replicas for DURATION seconds (default 600) under a mixed load, while faults are
# injected and proxy.yaml is edited. Everything runs on 127.0.0.1 and stops by itself.
#
#   DURATION=600 ./scripts/soak.sh
#
# Load: redis-benchmark loops (many clients, plain and pipelined, reads and writes of
# several types) and clients sending random bytes. Faults, every 120 s: a replica stopped
# with SIGSTOP for 5 s, the other replica killed and restarted 5 s later, the master
# killed and restarted 2 s later. Every 20 s a routing rule's budget flips (a reload).
# redsplit's resident memory is sampled every 5 s. At the end it prints requests served,
# errors by kind (from /metrics) and memory at start, peak and end, and fails if the
# proxy died.
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION=${DURATION:-600}
for tool in redis-server redis-cli redis-benchmark curl python3; do
  command -v "$tool" >/dev/null || { echo "soak: $tool is needed" >&2; exit 1; }
done

cargo build --release --locked
bin=$PWD/target/release/redsplit

work=$(mktemp -d -t redsplit-soak-XXXXXX)
declare -A pid
bg=()
cleanup() {
  for p in "${bg[@]}" "${pid[@]}"; do kill -9 "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  echo "soak: logs kept in $work"
}
trap cleanup EXIT

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}
MPORT=$(free_port); R1PORT=$(free_port); R2PORT=$(free_port)
PPORT=$(free_port); APORT=$(free_port)

# start_redis NAME PORT [ARGS...]: (re)start a server in the background.
start_redis() {
  local name=$1 port=$2
  shift 2
  mkdir -p "$work/$name"
  redis-server --port "$port" --bind 127.0.0.1 --save "" --appendonly no \
    --dir "$work/$name" --logfile "$work/$name.log" \
    --repl-diskless-sync yes --repl-diskless-sync-delay 0 "$@" &
  pid[$name]=$!
  for _ in $(seq 100); do
    redis-cli -p "$port" ping >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  echo "soak: $name did not start" >&2
  exit 1
}
# kill_quietly PID: SIGKILL, reaped without the shell's job notice.
kill_quietly() { { kill -9 "$1" && wait "$1"; } 2>/dev/null || true; }
start_master() { start_redis master "$MPORT"; }
start_r1() { start_redis replica1 "$R1PORT" --replicaof 127.0.0.1 "$MPORT"; }
start_r2() { start_redis replica2 "$R2PORT" --replicaof 127.0.0.1 "$MPORT"; }
start_master
start_r1
start_r2

cfg=$work/proxy.yaml
cat >"$cfg" <<EOF
listen: "127.0.0.1:$PPORT"
admin:
  listen: "127.0.0.1:$APORT"
backend:
  master: "127.0.0.1:$MPORT"
  replicas: ["127.0.0.1:$R1PORT", "127.0.0.1:$R2PORT"]
  command_timeout_ms: 1000
  connect_timeout_ms: 500
routing:
  default:
    consistency: replica
    max_lag_ms: 1000
  rules:
    - name: soak-flip
      keys: ["key:*"]
      consistency: replica
      max_lag_ms: 2000
    - name: counters
      keys: ["counter:*"]
      consistency: master
limits:
  client_output_buffer_limit: 64mb
EOF
"$bin" check "$cfg"
RUST_LOG=info "$bin" run --config "$cfg" >"$work/redsplit.log" 2>&1 &
pid[redsplit]=$!
for _ in $(seq 100); do
  redis-cli -p "$PPORT" ping >/dev/null 2>&1 && break
  sleep 0.1
done
redis-cli -p "$PPORT" ping >/dev/null

rss() { awk '/^VmRSS/ {print $2}' "/proc/${pid[redsplit]}/status"; }
metric() { # metric NAME [LABEL-FILTER]: the sum of a counter's samples
  curl -s "http://127.0.0.1:$APORT/metrics" |
    awk -v n="$1" -v f="${2:-}" 'index($1, n) == 1 && (f == "" || index($1, f)) && $1 !~ /_created/ {s += $2} END {printf "%d\n", s}'
}

start=$SECONDS
deadline=$((start + DURATION))
rss_start=$(rss)
echo "soak: redsplit on :$PPORT (admin :$APORT), master :$MPORT, replicas :$R1PORT :$R2PORT, for ${DURATION}s; RSS at start ${rss_start} kB"

# Load: each loop runs until the deadline (no run outlives it).
bench_loop() {
  while ((SECONDS < deadline)); do
    timeout $((deadline - SECONDS + 1)) \
      redis-benchmark -h 127.0.0.1 -p "$PPORT" "$@" >>"$work/bench.log" 2>&1 || true
  done
}
bench_loop -c 10 -n 200000 -r 100000 -P 16 -q -t get,set &
bg+=($!)
bench_loop -c 20 -n 50000 -r 1000 -q eval "return redis.call('get', KEYS[1])" 1 key:__rand_int__ &
bg+=($!)
bench_loop -c 50 -n 100000 -r 100000 -q -t set,get,incr,lpush,rpop,sadd,hset,spop,lrange_100,mset &
bg+=($!)
# Clients that send random bytes.
(
  while ((SECONDS < deadline)); do
    { exec 3<>"/dev/tcp/127.0.0.1/$PPORT"; } 2>/dev/null || { sleep 1; continue; }
    head -c 65536 /dev/urandom >&3 2>/dev/null || true
    exec 3>&-
    sleep 2
  done
) &
bg+=($!)

peak=$rss_start
: >"$work/rss.log"
flip=2000
edits=0
next_edit=20
while ((SECONDS < deadline)); do
  sleep 1
  t=$((SECONDS - start))
  case $((t % 120)) in
    10) kill -STOP "${pid[replica1]}"; echo "t=${t}s: SIGSTOP replica1" ;;
    15) kill -CONT "${pid[replica1]}"; echo "t=${t}s: SIGCONT replica1" ;;
    40) kill_quietly "${pid[replica2]}"; echo "t=${t}s: killed replica2" ;;
    45) start_r2; echo "t=${t}s: restarted replica2" ;;
    80) kill_quietly "${pid[master]}"; echo "t=${t}s: killed the master" ;;
    82) start_master; echo "t=${t}s: restarted the master" ;;
  esac
  # (By schedule, not `t % 20`: a slow second must not skip an edit.)
  if ((t >= next_edit)); then
    flip=$((flip == 2000 ? 200 : 2000))
    sed -i "s/^      max_lag_ms: [0-9]*$/      max_lag_ms: $flip/" "$cfg"
    edits=$((edits + 1))
    next_edit=$((next_edit + 20))
  fi
  if ((t % 5 == 0)); then
    kill -0 "${pid[redsplit]}" 2>/dev/null || { echo "soak: redsplit died" >&2; tail -20 "$work/redsplit.log" >&2; exit 1; }
    r=$(rss)
    echo "$t $r" >>"$work/rss.log"
    ((r > peak)) && peak=$r
  fi
done
kill -CONT "${pid[replica1]}" 2>/dev/null || true
wait "${bg[@]}" 2>/dev/null || true
bg=()
redis-cli -p "$PPORT" ping >/dev/null || { echo "soak: redsplit does not answer" >&2; exit 1; }
rss_end=$(rss)

echo
echo "=== soak summary (${DURATION}s) ==="
echo "requests served:        $(metric redsplit_requests_total)"
echo "replies:                $(metric redsplit_replies_total)"
echo "error replies:          $(metric redsplit_error_replies_total)"
echo "backend failures:       $(metric redsplit_backend_failures_total)"
echo "reads retried on master:$(metric redsplit_read_retries_total)"
echo "clients accepted:       $(metric redsplit_clients_accepted_total)"
echo "clients limited:        $(metric redsplit_clients_limited_total)"
echo "clients rejected:       $(metric redsplit_clients_rejected_total)"
echo "config edits made:      $edits"
echo "config reloads ok:      $(metric redsplit_config_reloads_total 'result="ok"')"
echo "config reloads rejected:$(metric redsplit_config_reloads_total 'result="rejected"')"
echo "routed to replicas:     $(metric redsplit_routed_total 'target="replica"')"
echo "routed to the master:   $(metric redsplit_routed_total 'target="master"')"
echo "refused (routing):      $(metric redsplit_routed_total 'target="rejected"')"
echo "log lines at WARN/ERROR: $(sed 's/\x1b\[[0-9;]*m//g' "$work/redsplit.log" | grep -cE ' (WARN|ERROR) ' || true)"
echo "errors clients saw (redis-benchmark prints some of them), by message:"
grep -ao 'Error from server: [^(]*' "$work/bench.log" | sort | uniq -c | sort -rn | head || true
echo "RSS: start ${rss_start} kB, peak ${peak} kB, end ${rss_end} kB"
