#!/usr/bin/env bash
# Redis CPU per cache hit, one Redis against a Redis Cluster in the same run: the server
# (target/debug or $CATALOG_BINARY) serves W1 (a hot product) and W3 (a list of 100) from the
# cache under wrk, once on a private redis-server (port 7299) and once on the 3-primary cluster
# of scripts/redis-cluster.sh; prints EVALSHA time per call and Redis process CPU per call,
# summed over the primaries (cluster housekeeping included).
set -u
cd "$(dirname "$0")/.."
BIN="${CATALOG_BINARY:-target/debug/catalog-api}"
W1='{"query":"query ProductById($id: ID!) { product(id: $id) { id name price createdAt category { id name } } }","variables":{"id":"42"},"operationName":"ProductById"}'
W3='{"query":"query Products($filter: ProductFilter, $first: Int) { products(filter: $filter, first: $first) { edges { node { id name price category { id name } } } } }","variables":{"filter":{"categoryId":"7"},"first":100},"operationName":"Products"}'
nodes_of() { if [ "$1" = single ]; then echo 7299; else redis-cli -p 7100 cluster nodes | grep master | grep -v fail | awk '{print $2}' | cut -d: -f2 | cut -d@ -f1; fi; }
stat() { # total evalsha calls, usec, cpu seconds over the nodes
  local calls=0 usec=0 cpu=0
  for p in $(nodes_of "$1"); do
    line=$(redis-cli -p "$p" info commandstats | grep '^cmdstat_evalsha:' || true)
    c=$(echo "$line" | sed -n "s/^cmdstat_evalsha:calls=\([0-9]*\),.*/\1/p"); u=$(echo "$line" | sed -n "s/^cmdstat_evalsha:calls=[0-9]*,usec=\([0-9]*\),.*/\1/p")
    cu=$(redis-cli -p "$p" info cpu | awk -F: '/^used_cpu_(sys|user):/ {s+=$2} END {print s}')
    calls=$((calls + ${c:-0})); usec=$((usec + ${u:-0})); cpu=$(echo "$cpu + $cu" | bc)
  done
  echo "$calls $usec $cpu"
}
run() { # mode url workload-name body
  local mode=$1 url=$2 name=$3 payload=$4 port=18123
  rm -f /tmp/m.db
  DATABASE_URL="sqlite:///tmp/m.db?mode=rwc" REDIS_URL="$url" CATALOG_BIND=127.0.0.1:$port CATALOG_CACHE_PREFIX="m$RANDOM:" RUST_LOG=warn $BIN serve >/tmp/m-$mode.log 2>&1 &
  local pid=$!
  for _ in $(seq 1 100); do curl -s -o /dev/null http://127.0.0.1:$port/healthz && break; sleep 0.2; done
  for _ in 1 2 3; do curl -s -o /dev/null -H 'content-type: application/json' -d "$payload" http://127.0.0.1:$port/graphql; done
  printf 'wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/json"\nwrk.body = [[%s]]\n' "$payload" > /tmp/m.lua
  for p in $(nodes_of "$mode"); do redis-cli -p "$p" config resetstat >/dev/null; done
  local before; before=$(stat "$mode")
  wrk -t2 -c16 -d8s -s /tmp/m.lua http://127.0.0.1:$port/graphql | grep 'Requests/sec'
  local after; after=$(stat "$mode")
  kill "$pid"; wait "$pid" 2>/dev/null
  set -- $before; local c0=$1 u0=$2 cpu0=$3; set -- $after
  echo "$mode $name: evalsha calls $(( $1 - c0 )), usec/call $(echo "scale=2; ($2 - $u0) / ($1 - $c0)" | bc), Redis CPU µs per call $(echo "scale=2; ($3 - $cpu0) * 1000000 / ($1 - $c0)" | bc)"
}
redis-server --port 7299 --save '' --appendonly no --daemonize yes --logfile /tmp/r7299.log >/dev/null; sleep 0.5
CL=$(scripts/redis-cluster.sh start)
for round in 1 2; do
  run single redis://127.0.0.1:7299 W1 "$W1"
  run cluster "$CL" W1 "$W1"
  run single redis://127.0.0.1:7299 W3 "$W3"
  run cluster "$CL" W3 "$W3"
done
redis-cli -p 7299 shutdown nosave >/dev/null 2>&1
scripts/redis-cluster.sh stop
