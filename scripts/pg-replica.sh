#!/usr/bin/env bash
# A throwaway PostgreSQL primary with one streaming replica, for the benchmark and CI: the
# installed binaries (`pg_config --bindir`), run as the `postgres` system user (PostgreSQL
# refuses root), data in a temporary directory, ports $CATALOG_PG_PORT (primary) and +1
# (replica; default 5510/5511). The shared server on 5432 is never touched.
# `start` prints two lines: the primary's URL and the replica's (database `postgres`).
#   scripts/pg-replica.sh start [apply-delay]   # e.g. `start 100ms`: the replica lags that much
#   scripts/pg-replica.sh stop
set -euo pipefail
PORT="${CATALOG_PG_PORT:-5510}"
REPLICA_PORT=$((PORT + 1))
DIR="${CATALOG_PG_DIR:-${TMPDIR:-/tmp}/catalog-pg-replica-$PORT}"
BIN="$(pg_config --bindir 2>/dev/null || true)"

as_postgres() {
  if [ "$(id -un)" = postgres ]; then "$@"; else runuser -u postgres -- "$@"; fi
}

stop() {
  for data in "$DIR/replica" "$DIR/primary"; do
    if [ -f "$data/postmaster.pid" ]; then
      as_postgres "$BIN/pg_ctl" -D "$data" -m immediate -w stop >/dev/null 2>&1 || true
    fi
  done
  rm -rf "$DIR"
}

start() {
  local delay="${1:-0}"
  [ -x "$BIN/initdb" ] && [ -x "$BIN/pg_basebackup" ] ||
    { echo "PostgreSQL server binaries not found (pg_config --bindir)" >&2; exit 1; }
  id postgres >/dev/null 2>&1 || { echo "no postgres system user" >&2; exit 1; }
  stop
  mkdir -p "$DIR"
  chown postgres:postgres "$DIR"
  as_postgres "$BIN/initdb" -D "$DIR/primary" -U postgres -A trust --no-sync >"$DIR/initdb.log" 2>&1 ||
    { cat "$DIR/initdb.log" >&2; exit 1; }
  as_postgres tee -a "$DIR/primary/postgresql.conf" >/dev/null <<EOF
port = $PORT
listen_addresses = '127.0.0.1'
unix_socket_directories = '$DIR'
wal_level = replica
max_wal_senders = 5
max_connections = 200
fsync = off
hot_standby = on
EOF
  echo "host replication postgres 127.0.0.1/32 trust" | as_postgres tee -a "$DIR/primary/pg_hba.conf" >/dev/null
  as_postgres "$BIN/pg_ctl" -D "$DIR/primary" -l "$DIR/primary.log" -w start >/dev/null
  as_postgres "$BIN/pg_basebackup" -R -D "$DIR/replica" -h 127.0.0.1 -p "$PORT" -U postgres --no-sync
  # Later lines win: the replica's own port and its apply delay.
  printf "\nport = %s\nrecovery_min_apply_delay = '%s'\n" "$REPLICA_PORT" "$delay" |
    as_postgres tee -a "$DIR/replica/postgresql.auto.conf" >/dev/null
  as_postgres "$BIN/pg_ctl" -D "$DIR/replica" -l "$DIR/replica.log" -w start >/dev/null
  echo "postgres://postgres@127.0.0.1:$PORT/postgres"
  echo "postgres://postgres@127.0.0.1:$REPLICA_PORT/postgres"
}

case "${1:-}" in
  start) start "${2:-0}" ;;
  stop) stop ;;
  *) echo "usage: $0 start [apply-delay]|stop" >&2; exit 2 ;;
esac
