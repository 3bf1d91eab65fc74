#!/usr/bin/env bash
# The load benchmark, one command: installs wrk (Debian), makes sure PostgreSQL and Redis run,
# builds the release binary and the ceiling server (examples/ceiling.rs, a bare axum server),
# then scripts/bench.py seeds, serves, loads and prints the table.
# Usage: scripts/bench.sh [--products 100000] [--scale-products 1000000] [--duration 10] ...
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v wrk >/dev/null; then
  apt-get install -y wrk >/dev/null 2>&1 || { apt-get update >/dev/null && apt-get install -y wrk >/dev/null; }
fi
if ! pg_isready -h 127.0.0.1 -p 5432 -q 2>/dev/null; then
  pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -n1)" main start
fi
if ! redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1; then
  mkdir -p /var/lib/redis /var/log/redis
  redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no \
    --dir /var/lib/redis --logfile /var/log/redis/ci.log
fi
if [[ " $* " == *" --edge "* ]] && ! command -v varnishd >/dev/null; then
  apt-get install -y varnish varnish-modules >/dev/null 2>&1 ||
    { apt-get update >/dev/null && apt-get install -y varnish varnish-modules >/dev/null; }
fi
cargo build --release --quiet --bin catalog-api --example ceiling
# Built where cargo builds (CARGO_TARGET_DIR, else target/), unless the caller names other builds.
release="${CARGO_TARGET_DIR:-target}/release"
export CATALOG_BENCH_BINARY="${CATALOG_BENCH_BINARY:-$release/catalog-api}"
export CATALOG_BENCH_CEILING="${CATALOG_BENCH_CEILING:-$release/examples/ceiling}"
exec python3 scripts/bench.py "$@"
