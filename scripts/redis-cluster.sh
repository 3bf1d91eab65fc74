#!/usr/bin/env bash
# A throwaway Redis Cluster for tests and CI: 3 primaries and 3 replicas on ports
# $CATALOG_CLUSTER_PORT .. +5 (default 7100-7105), data in a temporary directory, nothing
# persisted. `start` prints the REDIS_URL to use; `stop` kills the nodes and removes the data.
#   scripts/redis-cluster.sh start    # -> redis+cluster://127.0.0.1:7100,...
#   scripts/redis-cluster.sh stop
set -euo pipefail
BASE="${CATALOG_CLUSTER_PORT:-7100}"
DIR="${CATALOG_CLUSTER_DIR:-${TMPDIR:-/tmp}/catalog-redis-cluster-$BASE}"
PORTS=$(seq "$BASE" $((BASE + 5)))

stop() {
  for port in $PORTS; do
    if [ -f "$DIR/$port/pid" ]; then
      kill -9 "$(cat "$DIR/$port/pid")" 2>/dev/null || true
    fi
  done
  rm -rf "$DIR"
}

start() {
  command -v redis-server >/dev/null && command -v redis-cli >/dev/null ||
    { echo "redis-server and redis-cli are required" >&2; exit 1; }
  stop
  for port in $PORTS; do
    mkdir -p "$DIR/$port"
    redis-server --port "$port" --bind 127.0.0.1 --cluster-enabled yes \
      --cluster-config-file "$DIR/$port/nodes.conf" --cluster-node-timeout 2000 \
      --save '' --appendonly no --dir "$DIR/$port" --daemonize yes \
      --pidfile "$DIR/$port/pid" --logfile "$DIR/$port/log" >/dev/null
  done
  for port in $PORTS; do
    for _ in $(seq 1 50); do redis-cli -p "$port" ping >/dev/null 2>&1 && break; sleep 0.1; done
  done
  nodes=""
  for port in $PORTS; do nodes="$nodes 127.0.0.1:$port"; done
  # shellcheck disable=SC2086
  redis-cli --cluster create $nodes --cluster-replicas 1 --cluster-yes >"$DIR/create.log" 2>&1 ||
    { cat "$DIR/create.log" >&2; exit 1; }
  for port in $PORTS; do
    for _ in $(seq 1 100); do
      redis-cli -p "$port" cluster info 2>/dev/null | grep -q 'cluster_state:ok' && break
      sleep 0.1
    done
    redis-cli -p "$port" cluster info | grep -q 'cluster_state:ok' ||
      { echo "node $port: cluster not ok" >&2; exit 1; }
  done
  echo "redis+cluster://$(echo $PORTS | sed 's/\([0-9]*\)/127.0.0.1:\1/g; s/ /,/g')"
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  *) echo "usage: $0 start|stop" >&2; exit 2 ;;
esac
