#!/usr/bin/env bash
# Server instructions per request, counted by callgrind: unlike req/s, the count does not move
# when other work shares the cores, so two builds compare exactly even on a busy machine.
# Serves BINARY on DATABASE_URL (an already seeded PostgreSQL database) and REDIS_URL under
# valgrind, sends wrk's Lua script for 5 s to warm up, then counts 10 s of requests.
#   scripts/instructions-per-request.sh BINARY DATABASE_URL SCRIPT.lua [PATH]
# Prints: requests=<n> instructions/request=<n>. Needs valgrind and wrk (Debian packages; both
# are installed when missing).
# KEEP_CALLGRIND=DIR keeps the callgrind output (for callgrind_annotate) and the server's log there.
set -euo pipefail
for tool in valgrind wrk; do
  command -v "$tool" >/dev/null ||
    apt-get install -y "$tool" >/dev/null 2>&1 || { apt-get update >/dev/null && apt-get install -y "$tool" >/dev/null; }
done
BINARY="$1"; DATABASE="$2"; SCRIPT="$3"; URL_PATH="${4:-/graphql}"
PORT=$((19300 + RANDOM % 500))
OUT="$(mktemp -d)"
finish() {
  kill "$PID" 2>/dev/null || true
  if [ -n "${KEEP_CALLGRIND:-}" ]; then cp "$OUT"/callgrind.* "$OUT"/server.log "$KEEP_CALLGRIND"/ 2>/dev/null || true; fi
  rm -rf "$OUT"
}
trap finish EXIT
DATABASE_URL="$DATABASE" REDIS_URL="${REDIS_URL:-redis://127.0.0.1:6379}" CATALOG_BIND="127.0.0.1:$PORT" \
  CATALOG_ALLOW_CACHE_BYPASS=true CATALOG_DEMO_DATA=false RUST_LOG=warn CATALOG_DB_POOL_SIZE=4 \
  CATALOG_CACHE_PREFIX="instructions:$PORT:" CATALOG_REQUEST_TIMEOUT_MS=60000 \
  CATALOG_REDIS_COMMAND_TIMEOUT_MS=5000 CATALOG_REDIS_CONNECT_TIMEOUT_MS=5000 CATALOG_DB_ACQUIRE_TIMEOUT_MS=30000 \
  valgrind --tool=callgrind --callgrind-out-file="$OUT/callgrind.%p" "$BINARY" serve >"$OUT/server.log" 2>&1 &
PID=$!
# Under valgrind, start-up (migrations included) takes seconds, minutes on a busy machine.
for _ in $(seq 1 600); do curl -sf "http://127.0.0.1:$PORT/readyz" >/dev/null && break; sleep 1; done
curl -sf "http://127.0.0.1:$PORT/readyz" >/dev/null || { echo "the server did not become ready" >&2; exit 1; }
wrk -t1 -c4 -d5s -s "$SCRIPT" "http://127.0.0.1:$PORT$URL_PATH" >/dev/null
callgrind_control -z "$PID" >/dev/null
REPORT="$(wrk -t1 -c4 -d10s -s "$SCRIPT" "http://127.0.0.1:$PORT$URL_PATH")"
callgrind_control -d "$PID" >/dev/null
sleep 1
REQUESTS="$(echo "$REPORT" | sed -n 's/^ *\([0-9]*\) requests in.*/\1/p')"
DUMP="$(ls -t "$OUT"/callgrind.*.* | head -n1)"
TOTAL="$(callgrind_annotate "$DUMP" | grep -m1 'PROGRAM TOTALS' | awk '{gsub(",", "", $1); print $1}')"
echo "requests=$REQUESTS instructions/request=$((TOTAL / REQUESTS))"
