#!/usr/bin/env bash
# The randomized consistency checker, long version: runs tests/api/checker.rs for N minutes
# per cache configuration (without and with the first tier, on one private redis-server with
# its faults, then on a private Redis Cluster with primaries killed and failed over), on
# PostgreSQL when CATALOG_TEST_DATABASE_URL is set (SQLite otherwise), and prints the seeds
# and the tallies.
# Usage: scripts/check.sh [--minutes 10] [--seed 12345]
set -euo pipefail
cd "$(dirname "$0")/.."

minutes=5
seed="${CATALOG_CHECK_SEED:-}"
while [ $# -gt 0 ]; do
  case "$1" in
    --minutes) minutes="$2"; shift 2 ;;
    --seed) seed="$2"; shift 2 ;;
    *) echo "usage: scripts/check.sh [--minutes N] [--seed S]" >&2; exit 2 ;;
  esac
done
if ! command -v redis-server >/dev/null; then
  echo "error: the checker starts its own redis-server; install it (apt-get install redis-server)" >&2
  exit 2
fi

export CATALOG_CHECK_SECONDS=$((minutes * 60))
[ -n "$seed" ] && export CATALOG_CHECK_SEED="$seed"
database="SQLite (set CATALOG_TEST_DATABASE_URL for PostgreSQL)"
[ -n "${CATALOG_TEST_DATABASE_URL:-}" ] && database="PostgreSQL"
echo "checker: ${minutes} minute(s) per configuration on ${database}"

log="$(mktemp -t catalog-check.XXXXXX.log)"
status=0
cargo test --test api checker -- --nocapture 2>&1 | tee "$log" >/dev/null || status=$?

echo
grep '^checker seed:' "$log" || true
sed -n '/^checker \(with\|without\) /,/^  violations/p' "$log"
if [ "$status" -eq 0 ]; then
  echo "checker: no violation"
else
  echo "checker: FAILED (full log: $log); first violations:"
  grep '^VIOLATION' "$log" | head -n 20 | cut -c1-400
fi
exit "$status"
