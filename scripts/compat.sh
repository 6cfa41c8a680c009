#!/usr/bin/env bash
# Outside compatibility runs: Redis's own Tcl test suite and redis-py's test suite, each
# run directly against a plain redis-server and through redsplit (a master, 2 replicas,
# read-your-writes on), with per-test differences printed. Not run by CI.
#
#   scripts/compat.sh REDIS_SRC [REDIS_PY_SRC]
#
# REDIS_SRC is an extracted Redis source tree of the installed server's version (its
# `runtest`, `tests/`); REDIS_PY_SRC an extracted redis-py tree (its `tests/`), whose
# tests run with the `pytest` on PATH (the tree's own `redis` package is imported).
# Nothing is fetched. Environment:
#   UNITS      Tcl units to run (default: every unit/* that runs against an external
#              server); "" skips the Tcl suite
#   REPEAT     runs of each unit through the proxy (default 1; every run must pass)
#   PY_FILES   redis-py test files (default: the 14 below); "" skips redis-py
#   PROTOCOLS  redis-py protocols (default "2 3")
#   DENY       the proxy's deny_commands, as a YAML list (default: the proxy's default);
#              e.g. "[SHUTDOWN, DEBUG]" lets the MONITOR tests run
#   REDSPLIT   the proxy binary (default target/release/redsplit, built if missing)
#   OUT        where logs go (default a new temp dir, kept)
# Every process runs on free ports and is stopped when the script exits.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ $# -lt 1 ]; then
  sed -n '2,21p' "$0" | sed 's/^# \{0,1\}//'
  exit 2
fi
redis_src=$(cd "$1" && pwd)
redis_py=${2:+$(cd "$2" && pwd)}

default_units="unit/printver unit/dump unit/auth unit/protocol unit/keyspace unit/scan
unit/info unit/info-command unit/type/string unit/type/incr unit/type/list
unit/type/list-2 unit/type/list-3 unit/type/set unit/type/zset unit/type/hash
unit/type/stream unit/type/stream-cgroups unit/sort unit/expire unit/other unit/multi
unit/quit unit/acl unit/acl-v2 unit/latency-monitor unit/pubsub unit/pubsubshard
unit/slowlog unit/scripting unit/functions unit/introspection unit/introspection-2
unit/limits unit/bitops unit/bitfield unit/geo unit/hyperloglog unit/lazyfree
unit/pause unit/querybuf unit/tracking unit/networking
unit/client-eviction unit/replybufsize"
units=${UNITS-$default_units}
repeat=${REPEAT:-1}
default_py="test_command_parser.py test_commands.py test_connection.py
test_connection_pool.py test_credentials.py test_encoding.py test_function.py
test_helpers.py test_lock.py test_monitor.py test_pipeline.py test_pubsub.py
test_retry.py test_scripting.py"
py_files=${PY_FILES-$default_py}
protocols=${PROTOCOLS:-2 3}
tags="-needs:debug -needs:repl -needs:config-maxmemory -needs:save"

redsplit=${REDSPLIT:-target/release/redsplit}
if [ ! -x "$redsplit" ]; then
  cargo build --release --bin redsplit
fi
redsplit=$(cd "$(dirname "$redsplit")" && pwd)/$(basename "$redsplit")
out=${OUT:-$(mktemp -d -t redsplit-compat-XXXXXX)}
mkdir -p "$out"
echo "logs in $out"

pids=()
stop_all() {
  if [ ${#pids[@]} -gt 0 ]; then
    kill "${pids[@]}" 2>/dev/null || true
    wait "${pids[@]}" 2>/dev/null || true
  fi
  pids=()
}
trap stop_all EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# wait_for WHAT COMMAND...: polls COMMAND for up to 20 s.
wait_for() {
  local what=$1
  shift
  for _ in $(seq 200); do
    if "$@" >/dev/null 2>&1; then return 0; fi
    sleep 0.1
  done
  echo "timed out waiting for $what (logs in $out)" >&2
  exit 1
}

# start_redis DIR PORT [ARGS...]
start_redis() {
  local dir=$1 port=$2
  shift 2
  mkdir -p "$dir"
  redis-server --port "$port" --bind 127.0.0.1 --save "" --appendonly no --dir "$dir" \
    --logfile "$dir/redis.log" --repl-diskless-sync yes --repl-diskless-sync-delay 0 "$@" &
  pids+=($!)
  wait_for "redis on $port" redis-cli -p "$port" ping
}

replica_synced() {
  redis-cli -p "$1" info replication | grep -q 'master_link_status:up'
}

# world NAME direct|proxy: fresh servers (and proxy); sets $port to where clients go.
world() {
  local name=$1 kind=$2 dir
  stop_all
  dir=$(mktemp -d "$out/$name.XXXX")
  local master
  master=$(free_port)
  start_redis "$dir/master" "$master"
  if [ "$kind" = direct ]; then
    port=$master
    return
  fi
  local r1 r2 admin
  r1=$(free_port)
  r2=$(free_port)
  start_redis "$dir/r1" "$r1" --replicaof 127.0.0.1 "$master"
  start_redis "$dir/r2" "$r2" --replicaof 127.0.0.1 "$master"
  wait_for "replica $r1 synced" replica_synced "$r1"
  wait_for "replica $r2 synced" replica_synced "$r2"
  port=$(free_port)
  admin=$(free_port)
  cat >"$dir/proxy.yaml" <<EOF
listen: 127.0.0.1:$port
admin:
  listen: 127.0.0.1:$admin
backend:
  master: 127.0.0.1:$master
  replicas: [127.0.0.1:$r1, 127.0.0.1:$r2]
routing:
  default:
    consistency: replica
    max_lag_ms: 1000
    read_your_writes: true
  fallback: master
replication:
  poll_interval_ms: 50
${DENY:+deny_commands: $DENY}
EOF
  "$redsplit" run -c "$dir/proxy.yaml" 2>"$dir/proxy.log" &
  pids+=($!)
  wait_for "the proxy on $port" redis-cli -p "$port" ping
  wait_for "both replicas in the read pool" \
    bash -c "[ \"\$(curl -sf http://127.0.0.1:$admin/metrics | grep -c '^redsplit_replica_in_pool{.*} 1')\" -ge 2 ]"
}

# results FILE: "ok<TAB>name" / "err<TAB>name" / "exception<TAB>text" lines of a Tcl run.
tcl_results() {
  sed 's/\x1b\[[0-9;]*m//g' "$1" | awk '
    /^\[ok\]: / { sub(/^\[ok\]: /, ""); sub(/ \([0-9]+ ms\)$/, ""); print "ok\t" $0; next }
    /^\[err\]: / { sub(/^\[err\]: /, ""); sub(/ in tests\/[^ ]*$/, ""); print "err\t" $0; next }
    /^\[exception\]: / { sub(/^\[exception\]: /, ""); print "exception\t" $0; next }
    /^\[TIMEOUT\]/ { print "exception\t" $0; next }'
}

run_unit() {
  local unit=$1 log=$2
  # The suite's own test server listens below --baseport: a random one, so that two
  # runs of this script can go on at once.
  (cd "$redis_src" && ./runtest --host 127.0.0.1 --port "$port" --tags "$tags" \
    --baseport $((20000 + RANDOM % 40000)) --clients 1 --timeout 600 --single "$unit") \
    >"$log" 2>&1 || true
}

# diff_runs DIRECT PROXIED: tests that passed directly and did not through the proxy.
diff_runs() {
  local d=$1 p=$2
  local dok pok
  dok=$(grep -c '^ok' "$d" || true)
  pok=$(grep -c '^ok' "$p" || true)
  printf '  direct: %s ok, %s failed; proxy: %s ok, %s failed\n' \
    "$dok" "$(grep -vc '^ok' "$d" || true)" "$pok" "$(grep -vc '^ok' "$p" || true)"
  # Passed directly: failed through the proxy, or never ran (an exception ends a unit).
  comm -12 <(grep '^ok' "$d" | cut -f2- | sort -u) <(grep '^err' "$p" | cut -f2- | sort -u) |
    sed 's/^/  DIFF fails through the proxy: /'
  grep '^exception' "$p" | cut -f2- | sed 's/^/  DIFF exception through the proxy: /' || true
  local missing
  missing=$(comm -23 <(grep '^ok' "$d" | cut -f2- | sort -u) <(cut -f2- "$p" | sort -u) | wc -l)
  if [ "$missing" -gt 0 ]; then
    echo "  DIFF $missing test(s) that pass direct did not run through the proxy"
  fi
}

total_diffs=0
if [ -n "$units" ]; then
  echo "== Redis Tcl suite ($(redis-server --version | awk '{print $3}'))"
  for unit in $units; do
    if [ ! -f "$redis_src/tests/$unit.tcl" ]; then
      continue
    fi
    safe=${unit//\//_}
    world "$safe-direct" direct
    run_unit "$unit" "$out/$safe.direct.log"
    tcl_results "$out/$safe.direct.log" >"$out/$safe.direct.res"
    for i in $(seq "$repeat"); do
      world "$safe-proxy-$i" proxy
      run_unit "$unit" "$out/$safe.proxy.$i.log"
      tcl_results "$out/$safe.proxy.$i.log" >"$out/$safe.proxy.$i.res"
      report=$(diff_runs "$out/$safe.direct.res" "$out/$safe.proxy.$i.res")
      echo "$unit (proxy run $i)"
      echo "$report"
      total_diffs=$((total_diffs + $(grep -c DIFF <<<"$report" || true)))
    done
  done
  stop_all
fi

# py_results JUNIT: "ok<TAB>test" / "fail<TAB>test" / "skip<TAB>test" from pytest's XML.
py_results() {
  python3 - "$1" <<'EOF'
import sys
import xml.etree.ElementTree as ET
for case in ET.parse(sys.argv[1]).iter("testcase"):
    name = case.get("classname", "") + "::" + case.get("name", "")
    kinds = {child.tag for child in case}
    if "skipped" in kinds:
        state = "skip"
    elif kinds & {"failure", "error"}:
        state = "fail"
    else:
        state = "ok"
    print(f"{state}\t{name}")
EOF
}

run_py() {
  local proto=$1 name=$2
  (cd "$redis_py" && PYTHONPATH="$redis_py" timeout 1800 pytest -q -p no:cacheprovider \
    --redis-url="redis://127.0.0.1:$port/0" --protocol="$proto" \
    --junitxml="$out/$name.xml" $(printf 'tests/%s ' $py_files)) >"$out/$name.log" 2>&1 || true
  py_results "$out/$name.xml" >"$out/$name.res"
}

if [ -n "$redis_py" ] && [ -n "$py_files" ]; then
  for proto in $protocols; do
    echo "== redis-py suite, RESP$proto"
    world "py$proto-direct" direct
    run_py "$proto" "py$proto.direct"
    world "py$proto-proxy" proxy
    run_py "$proto" "py$proto.proxy"
    d="$out/py$proto.direct.res" p="$out/py$proto.proxy.res"
    printf '  direct: %s passed, %s failed; proxy: %s passed, %s failed\n' \
      "$(grep -c '^ok' "$d" || true)" "$(grep -c '^fail' "$d" || true)" \
      "$(grep -c '^ok' "$p" || true)" "$(grep -c '^fail' "$p" || true)"
    report=$(comm -23 <(grep '^ok' "$d" | cut -f2- | sort -u) <(grep '^ok' "$p" | cut -f2- | sort -u) |
      sed 's/^/  DIFF passes direct, not through the proxy: /')
    [ -n "$report" ] && echo "$report"
    total_diffs=$((total_diffs + $(grep -c DIFF <<<"$report" || true)))
  done
  stop_all
fi

echo "== $total_diffs difference(s); logs in $out"
