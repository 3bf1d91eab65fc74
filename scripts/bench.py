#!/usr/bin/env python3
"""Load benchmark for catalog-api: every workload over HTTP under concurrent load, against
PostgreSQL and Redis, each reported as a ratio to /healthz of the same server in the same run,
and to the ceiling: a bare axum server (examples/ceiling.rs) answering W1's body under W1's load.

Run it through scripts/bench.sh (which installs wrk and builds the release binaries)."""

import argparse
import json
import os
import random
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import urllib.request
from datetime import datetime, timezone

# The candidate binary; CATALOG_BENCH_BINARY names another build (e.g. a copy kept for a comparison).
BINARY = os.environ.get("CATALOG_BENCH_BINARY", os.path.join("target", "release", "catalog-api"))
# The ceiling server (`cargo build --release --example ceiling`).
CEILING_BINARY = os.environ.get("CATALOG_BENCH_CEILING", os.path.join("target", "release", "examples", "ceiling"))

Q_PRODUCT = "query ProductById($id: ID!) { product(id: $id) { id name price createdAt category { id name } } }"
Q_LIST = ("query Products($filter: ProductFilter, $first: Int) { products(filter: $filter, first: $first) "
          "{ edges { node { id name price category { id name } } } } }")
Q_DASHBOARD = ("query Dashboard { dashboardStats { totalProducts categoriesCount avgPrice "
               "productsByCategory { categoryId name productCount } } }")
M_PRICE = "mutation UpdatePrice($id: ID!, $input: UpdateProductInput!) { updateProduct(id: $id, input: $input) { id price } }"


def lua_string(text):
    return json.dumps(text)


def body(query, variables, name):
    return json.dumps({"query": query, "variables": variables, "operationName": name})


def sha256(text):
    import hashlib
    return hashlib.sha256(text.encode()).hexdigest()


def w1_request():
    """W1's POST body: the hot product."""
    return body(Q_PRODUCT, {"id": "42"}, "ProductById")


def workloads(token):
    """name -> (description, wrk Lua script, path)."""
    json_headers = 'wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/json"\n'
    w1 = w1_request()
    w2_template = body(Q_PRODUCT, {"id": "ID_PLACEHOLDER"}, "ProductById").replace("ID_PLACEHOLDER", "%d")
    w3 = body(Q_LIST, {"filter": {"categoryId": "7"}, "first": 100}, "Products")
    w4_template = body(Q_LIST, {"filter": {"categoryId": "7", "minPrice": "MINPRICE"}, "first": 100}, "Products").replace(
        '"MINPRICE"', '"%d"')
    w5 = body(Q_DASHBOARD, {}, "Dashboard")
    apq_path = "/graphql?" + urllib.parse.urlencode({
        "operationName": "ProductById",
        "variables": json.dumps({"id": "42"}),
        "extensions": json.dumps({"persistedQuery": {"version": 1, "sha256Hash": sha256(Q_PRODUCT)}}),
    })
    w7_write = body(M_PRICE, {"id": "IDX", "input": {"price": "PRICEX"}}, "UpdatePrice").replace(
        '"IDX"', '"%d"').replace('"PRICEX"', '"%d.%02d"')
    seed = "math.randomseed(os.time() + tonumber(tostring({}):sub(8), 16))\n"
    return {
        "healthz": ("GET /healthz (baseline)", "", "/healthz"),
        "W1": ("hot product, cached", json_headers + f"wrk.body = {lua_string(w1)}\n", "/graphql"),
        "W2": ("product by random id 1..1000, cached", json_headers + seed +
               f"local t = {lua_string(w2_template)}\n"
               "request = function() return wrk.format(nil, nil, nil, string.format(t, math.random(1, 1000))) end\n",
               "/graphql"),
        "W3": ("cached list, category 7, first 100", json_headers + f"wrk.body = {lua_string(w3)}\n", "/graphql"),
        "W4": ("uncached list, random minPrice (X-Bypass-Cache)", json_headers + seed +
               'wrk.headers["X-Bypass-Cache"] = "1"\n' + f"local t = {lua_string(w4_template)}\n"
               "request = function() return wrk.format(nil, nil, nil, string.format(t, math.random(1, 900))) end\n",
               "/graphql"),
        "W5": ("dashboardStats, cached, with a token", json_headers +
               f'wrk.headers["Authorization"] = "Bearer {token}"\n' + f"wrk.body = {lua_string(w5)}\n", "/graphql"),
        "W6": ("APQ over GET (W1 by hash)", "", apq_path),
        "W7": ("95% W2 reads, 5% updateProduct price", json_headers + seed +
               f"local r = {lua_string(w2_template)}\nlocal w = {lua_string(w7_write)}\n"
               f'local auth = {{["Content-Type"] = "application/json", ["Authorization"] = "Bearer {token}"}}\n'
               "request = function()\n"
               "  if math.random(1, 100) <= 5 then\n"
               "    return wrk.format('POST', nil, auth, string.format(w, math.random(1, 1000), math.random(1, 9999), math.random(0, 99)))\n"
               "  end\n"
               "  return wrk.format(nil, nil, nil, string.format(r, math.random(1, 1000)))\n"
               "end\n", "/graphql"),
    }


class Server:
    ready_path = "/readyz"

    def __init__(self, env, port, binary=BINARY):
        self.env = env
        self.port = port
        self.binary = binary
        self.process = None

    def command(self):
        return [self.binary, "serve"]

    def start(self):
        log_path = os.path.join(tempfile.gettempdir(), f"catalog-bench-server-{self.port}.log")
        log = open(log_path, "w")
        self.process = subprocess.Popen(self.command(), env=self.env, stdout=log, stderr=log)
        deadline = time.time() + 60
        while time.time() < deadline:
            try:
                urllib.request.urlopen(self.url(self.ready_path), timeout=1).read()
                return
            except Exception:
                time.sleep(0.2)
        raise SystemExit(f"{self.binary} did not become ready; see {log_path}")

    def stop(self):
        if self.process:
            self.process.terminate()
            self.process.wait(timeout=30)

    def url(self, path):
        return f"http://127.0.0.1:{self.port}{path}"

    def rss_mib(self):
        with open(f"/proc/{self.process.pid}/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
        return 0.0

    def cpu_seconds(self):
        """User plus system CPU time the server process has used."""
        with open(f"/proc/{self.process.pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def statements(self):
        text = urllib.request.urlopen(self.url("/metrics"), timeout=5).read().decode()
        match = re.search(r"^catalog_db_statements_total (\d+)", text, re.M)
        return int(match.group(1)) if match else 0

    def post(self, payload, headers=None):
        status, raw = self.post_raw(payload, headers)
        return status, json.loads(raw)

    def post_raw(self, payload, headers=None):
        """The X-Cache header and the body's bytes as sent."""
        request = urllib.request.Request(self.url("/graphql"), data=payload.encode(), method="POST",
                                         headers={"Content-Type": "application/json", **(headers or {})})
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.headers.get("x-cache"), response.read()


class CeilingServer(Server):
    """examples/ceiling.rs: a bare axum server answering every request with `body`, the most any
    Rust HTTP server does here. It has no database, cache or metrics."""
    ready_path = "/healthz"

    def __init__(self, port, body_bytes):
        super().__init__(dict(os.environ, CEILING_BIND=f"127.0.0.1:{port}"), port, CEILING_BINARY)
        with tempfile.NamedTemporaryFile("wb", suffix=".json", delete=False) as handle:
            handle.write(body_bytes)
        self.body_path = handle.name

    def command(self):
        return [self.binary, self.body_path]

    def stop(self):
        super().stop()
        os.unlink(self.body_path)

    def statements(self):
        return 0


# Where the ceiling server listens: past the ports the catalog servers take (port .. port + 3).
CEILING_PORT_OFFSET = 10
CEILING_NAME = "ceiling (bare axum, W1 body)"


def start_ceiling(source, port):
    """The ceiling server, answering with the bytes `source` (a primed catalog server) answers W1 with."""
    status, w1_body = source.post_raw(w1_request())
    if status != "HIT":
        raise SystemExit(f"W1 is not cached on the server ({status}): prime it first")
    ceiling = CeilingServer(port + CEILING_PORT_OFFSET, w1_body)
    ceiling.start()
    return ceiling


def measure_ceiling(ceiling, args):
    """W1's load (same script, connections, threads and duration) on the ceiling server."""
    _, script, path = workloads("")["W1"]
    result = measure(ceiling, CEILING_NAME, script, path, args)
    result["description"] = "examples/ceiling.rs answering W1's body"
    return result


# The Redis nodes whose work a request causes (all primaries of a cluster); see `redis_nodes`.
REDIS_NODES = [6379]


def redis_info(section, port):
    return subprocess.run(["redis-cli", "-h", "127.0.0.1", "-p", str(port), "INFO", section],
                          capture_output=True, text=True).stdout


def redis_commands():
    total = 0
    for port in REDIS_NODES:
        match = re.search(r"total_commands_processed:(\d+)", redis_info("stats", port))
        total += int(match.group(1)) if match else 0
    return total


def redis_cpu_seconds():
    """CPU time (user + system) Redis has used, summed over the nodes that serve requests."""
    total = 0.0
    for port in REDIS_NODES:
        text = redis_info("cpu", port)
        total += sum(float(value) for value in re.findall(r"^used_cpu_(?:sys|user):([\d.]+)", text, re.M))
    return total


def redis_nodes(redis_url):
    """The ports of the Redis nodes that serve requests: the one node, or a cluster's primaries."""
    if not redis_url.startswith("redis+cluster://"):
        return [int(urllib.parse.urlparse(redis_url).port or 6379)]
    first = redis_url.split("://", 1)[1].split(",")[0]
    nodes = subprocess.run(["redis-cli", "-p", first.rsplit(":", 1)[1], "CLUSTER", "NODES"],
                           capture_output=True, text=True).stdout
    return [int(line.split()[1].split("@")[0].rsplit(":", 1)[1])
            for line in nodes.splitlines() if "master" in line.split()[2]]


def parse_wrk(text):
    def duration_ms(value):
        number, unit = re.match(r"([\d.]+)(us|ms|s|m)", value).groups()
        return float(number) * {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}[unit]
    result = {"rps": 0.0, "p50": None, "p99": None, "requests": 0, "errors": 0}
    if match := re.search(r"Requests/sec:\s+([\d.]+)", text):
        result["rps"] = float(match.group(1))
    if match := re.search(r"(\d+) requests in", text):
        result["requests"] = int(match.group(1))
    for percentile in ("50", "99"):
        if match := re.search(rf"^\s+{percentile}%\s+(\S+)", text, re.M):
            result[f"p{percentile}"] = duration_ms(match.group(1))
    if match := re.search(r"Non-2xx or 3xx responses: (\d+)", text):
        result["errors"] += int(match.group(1))
    if match := re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text):
        result["errors"] += sum(int(group) for group in match.groups())
    return result


def run_wrk(server, script, path, seconds, connections, threads):
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as handle:
        handle.write(script)
        script_path = handle.name
    command = ["wrk", "-t", str(threads), "-c", str(connections), "-d", f"{seconds}s", "--latency",
               "-s", script_path, server.url(path)]
    output = subprocess.run(command, capture_output=True, text=True).stdout
    os.unlink(script_path)
    return output


def measure(server, name, script, path, args):
    run_wrk(server, script, path, args.warmup, args.connections, args.threads)
    statements, commands = server.statements(), redis_commands()
    cpu, redis_cpu = server.cpu_seconds(), redis_cpu_seconds()
    peak = [server.rss_mib()]
    stop = threading.Event()

    def sample():
        while not stop.wait(0.2):
            peak[0] = max(peak[0], server.rss_mib())
    sampler = threading.Thread(target=sample)
    sampler.start()
    output = run_wrk(server, script, path, args.duration, args.connections, args.threads)
    stop.set()
    sampler.join()
    result = parse_wrk(output)
    requests = max(result["requests"], 1)
    # The server's own CPU per request: steadier than req/s when other work shares the cores.
    result["cpu_us"] = (server.cpu_seconds() - cpu) / requests * 1e6
    result["redis_cpu_us"] = (redis_cpu_seconds() - redis_cpu) / requests * 1e6
    result["sql_per_request"] = (server.statements() - statements) / requests
    result["redis_per_request"] = (redis_commands() - commands) / requests
    result["rss_mib"] = peak[0]
    result["name"] = name
    return result


def check_no_stale_reads(server):
    """After the write mix: every product read through the cache equals the database."""
    stale = 0
    for product_id in range(1, 1001):
        payload = body(Q_PRODUCT, {"id": str(product_id)}, "ProductById")
        _, cached = server.post(payload)
        _, fresh = server.post(payload, {"X-Bypass-Cache": "1"})
        if cached["data"]["product"]["price"] != fresh["data"]["product"]["price"]:
            stale += 1
    return stale


def apq_registration():
    """The POST body that registers W6's persisted query (W1's document with its hash)."""
    return json.dumps({"query": Q_PRODUCT, "variables": {"id": "42"}, "operationName": "ProductById",
                       "extensions": {"persistedQuery": {"version": 1, "sha256Hash": sha256(Q_PRODUCT)}}})


def prime(server, token):
    """Registers the APQ hash, fills W2's 1,000 ids, and checks each workload answers without errors."""
    server.post(apq_registration())
    for product_id in range(1, 1001):
        server.post(body(Q_PRODUCT, {"id": str(product_id)}, "ProductById"))
    checks = [
        (body(Q_PRODUCT, {"id": "42"}, "ProductById"), {}),
        (body(Q_LIST, {"filter": {"categoryId": "7"}, "first": 100}, "Products"), {}),
        (body(Q_DASHBOARD, {}, "Dashboard"), {"Authorization": f"Bearer {token}"}),
    ]
    for payload, headers in checks:
        server.post(payload, headers)
        status, response = server.post(payload, headers)
        if "errors" in response or status != "HIT":
            raise SystemExit(f"workload check failed ({status}): {json.dumps(response)[:300]}")
    _, response = server.post(body(Q_LIST, {"filter": {"categoryId": "7", "minPrice": "5"}, "first": 100}, "Products"),
                              {"X-Bypass-Cache": "1"})
    if "errors" in response:
        raise SystemExit(f"W4 check failed: {response}")


def measure_invalidation_delay(env, port, token, rounds=50, load_script=None, local_tier=True):
    """Two instances on one Redis (with first tiers unless `local_tier` is false): after a
    mutation through A returns, how long until B serves the new price? B is polled back to back;
    B's entry is re-cached between rounds. With `load_script` (W7's mix) wrk keeps both
    instances busy with reads and steady writes meanwhile. Returns the sorted delays (ms), how
    many first reads after a response were stale, and the sorted mutation latencies (ms: the
    price of the first tiers' leases, against the same without first tiers)."""
    tier = "true" if local_tier else "false"
    first = Server(dict(env, CATALOG_CACHE_LOCAL_TIER=tier, CATALOG_BIND=f"127.0.0.1:{port + 1}"), port + 1)
    second = Server(dict(env, CATALOG_CACHE_LOCAL_TIER=tier, CATALOG_BIND=f"127.0.0.1:{port + 2}"), port + 2)
    first.start()
    second.start()
    delays, stale_first_reads, loads, writes = [], 0, [], []
    try:
        if load_script:
            for server in (first, second):
                with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as handle:
                    handle.write(load_script)
                loads.append(subprocess.Popen(
                    ["wrk", "-t", "1", "-c", "16", "-d", "600s", "-s", handle.name, server.url("/graphql")],
                    stdout=subprocess.DEVNULL))
            time.sleep(2)
        # A product outside W7's 1..1000, so only these rounds write it.
        read = body(Q_PRODUCT, {"id": "5000"}, "ProductById")
        for round_number in range(rounds):
            second.post(read)
            second.post(read)
            price = f"{round_number + 1}.{round_number % 100:02d}"
            sent = time.perf_counter()
            first.post(body(M_PRICE, {"id": "5000", "input": {"price": price}}, "UpdatePrice"),
                       {"Authorization": f"Bearer {token}"})
            committed = time.perf_counter()
            writes.append((committed - sent) * 1000)
            polls = 0
            while True:
                _, response = second.post(read)
                polls += 1
                if response["data"]["product"]["price"] == price:
                    delays.append((time.perf_counter() - committed) * 1000)
                    break
                if time.perf_counter() - committed > 5:
                    delays.append(float("inf"))
                    break
            stale_first_reads += polls > 1
    finally:
        for load in loads:
            load.terminate()
            load.wait()
        first.stop()
        second.stop()
    delays.sort()
    writes.sort()
    return delays, stale_first_reads, writes


def psql(admin_url, sql):
    subprocess.run(["psql", admin_url, "-qc", sql], check=True, capture_output=True)


def seed(env, categories, products, binary=BINARY):
    started = time.time()
    subprocess.run([binary, "seed", "--categories", str(categories), "--products", str(products)], env=env, check=True,
                   capture_output=True)
    return time.time() - started


def format_table(results, baseline, ceiling=0):
    """`ceiling`: the ceiling server's req/s (0 when not measured); "of ceiling" is req/s over it."""
    lines = ["| workload | requests/s | vs /healthz | of ceiling | p50 ms | p99 ms | server CPU µs/req | errors | "
             "SQL/req | Redis cmds/req | RSS MiB |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for result in results:
        ratio = result["rps"] / baseline if baseline else 0
        of_ceiling = f"{result['rps'] / ceiling:.3f}" if ceiling else "-"
        lines.append(f"| {result['name']} | {result['rps']:.0f} | {ratio * 100:.1f}% | {of_ceiling} | "
                     f"{result['p50'] or 0:.2f} | {result['p99'] or 0:.2f} | {result['cpu_us']:.0f} | "
                     f"{result['errors']} | {result['sql_per_request']:.2f} | {result['redis_per_request']:.2f} | "
                     f"{result['rss_mib']:.0f} |")
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--products", type=int, default=100_000)
    parser.add_argument("--scale-products", type=int, default=1_000_000, help="second scale point; 0 to skip")
    parser.add_argument("--duration", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--only", default="", help="comma-separated workload names (and `delay`: the "
                        "first tier's cross-instance invalidation delay, idle and under load)")
    parser.add_argument("--local-tier", action="store_true", help="turn on the in-process first tier")
    # The database is on loopback: no TLS, as over a Unix socket (PostgreSQL here has ssl=on,
    # and TLS on a local link only burns the cores the benchmark shares).
    parser.add_argument("--pg", default="postgres://postgres@127.0.0.1:5432")
    parser.add_argument("--redis", default="redis://127.0.0.1:6379")
    parser.add_argument("--compare", default="", help="path of another catalog-api binary (e.g. the previous "
                        "commit's release build): every workload runs on both, alternately, in this one run")
    parser.add_argument("--cluster", action="store_true", help="single Redis next to a Redis Cluster (3 primaries, "
                        "3 replicas, started by scripts/redis-cluster.sh), same binary, same run")
    parser.add_argument("--rounds", type=int, default=1, help="side-by-side runs: measure each workload this "
                        "many times, alternating the two setups, and report medians")
    parser.add_argument("--edge", action="store_true", help="W1, W3, W5 as GETs straight to the server and "
                        "through Varnish (the shipped VCL, purged on commit), then a mixed 1%%-write workload "
                        "through Varnish: its hit rate, purges/s and origin requests/s (scripts/bench_edge.py)")
    parser.add_argument("--replica", action="store_true", help="PostgreSQL primary alone next to primary plus a "
                        "streaming read replica (started by scripts/pg-replica.sh), same binary, same run")
    parser.add_argument("--ceiling", action=argparse.BooleanOptionalAction, default=True,
                        help="measure the ceiling first: a bare axum server (examples/ceiling.rs) answering W1's "
                        "body under W1's load, and report each workload's req/s as a share of it (\"of ceiling\"); "
                        "side by side, once per round next to the setups. --no-ceiling skips it")
    args = parser.parse_args()
    selected = [name for name in args.only.split(",") if name] or None
    port = 18000 + random.randint(0, 999)
    env = dict(os.environ,
               REDIS_URL=args.redis, CATALOG_ALLOW_CACHE_BYPASS="true", CATALOG_DEMO_DATA="false", RUST_LOG="warn",
               # Sized for 2 cores (PostgreSQL's rule of thumb: about 2 connections per core);
               # 16 backends on 2 cores mostly add context switches (W4: 2460 -> 2791 req/s).
               CATALOG_DB_POOL_SIZE=os.environ.get("CATALOG_DB_POOL_SIZE", "4"),
               CATALOG_CACHE_PREFIX=f"catalog-bench:{random.randint(0, 1 << 30)}:",
               CATALOG_CACHE_LOCAL_TIER="true" if args.local_tier else "false")
    if args.compare or args.cluster or args.replica:
        return side_by_side(args, env, port, selected)

    database = "catalog_bench"
    psql(f"{args.pg}/postgres", f"DROP DATABASE IF EXISTS {database}")
    psql(f"{args.pg}/postgres", f"CREATE DATABASE {database}")
    # SSD storage: the planner's default random_page_cost (4, tuned for spinning disks) makes
    # it walk the primary key for a filtered keyset page at 1M rows instead of the
    # (category_id, id) index. 1.1 is the usual production setting for SSDs.
    psql(f"{args.pg}/postgres", f"ALTER DATABASE {database} SET random_page_cost = 1.1")
    env.update(DATABASE_URL=f"{args.pg}/{database}?sslmode=disable", CATALOG_BIND=f"127.0.0.1:{port}")
    seconds = seed(env, 50, args.products)
    print(f"seeded 50 categories and {args.products} products on PostgreSQL in {seconds:.1f} s", flush=True)
    token = subprocess.run([BINARY, "token", "create", "bench"], env=env, check=True, capture_output=True,
                           text=True).stdout.strip()

    if args.edge:
        sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
        import bench_edge
        return bench_edge.run(sys.modules[__name__], args, env, port, token)

    server = Server(env, port)
    server.start()
    results = []
    try:
        prime(server, token)
        if args.ceiling:
            ceiling = start_ceiling(server, port)
            try:
                results.append(measure_ceiling(ceiling, args))
            finally:
                ceiling.stop()
            print(f"  ceiling  {results[-1]['rps']:9.0f} req/s  p50 {results[-1]['p50'] or 0:.2f} ms  "
                  f"p99 {results[-1]['p99'] or 0:.2f} ms", flush=True)
        for name, (description, script, path) in workloads(token).items():
            if selected and name not in selected and name != "healthz":
                continue
            result = measure(server, name, script, path, args)
            result["description"] = description
            if name == "W7":
                result["stale"] = check_no_stale_reads(server)
            results.append(result)
            print(f"  {name:8} {result['rps']:9.0f} req/s  p50 {result['p50'] or 0:.2f} ms  "
                  f"p99 {result['p99'] or 0:.2f} ms", flush=True)
    finally:
        server.stop()

    scale = []
    if args.scale_products and (not selected or {"W3", "W4"} & set(selected)):
        seconds = seed(env, 50, args.scale_products)
        print(f"seeded up to {args.scale_products} products in {seconds:.1f} s", flush=True)
        server = Server(env, port)
        server.start()
        try:
            prime(server, token)
            for name, (description, script, path) in workloads(token).items():
                if name in ("W3", "W4"):
                    result = measure(server, f"{name} @ {args.scale_products // 1000}k", script, path, args)
                    scale.append(result)
        finally:
            server.stop()

    # `--only delay` measures the first tier's cross-instance delay alone.
    wanted = not selected or "delay" in selected
    delay_runs = []
    if wanted:
        w7 = workloads(token)["W7"][1]
        for label, load, local_tier in (("idle", None, True), ("idle", None, False),
                                        ("under W7 load on both", w7, True),
                                        ("under W7 load on both", w7, False)):
            measured, stale, writes = measure_invalidation_delay(env, port, token, load_script=load,
                                                                 local_tier=local_tier)
            delay_runs.append((label, local_tier, measured, stale, writes))

    baseline = next((result["rps"] for result in results if result["name"] == "healthz"), 0)
    ceiling_rps = next((result["rps"] for result in results if result["name"] == CEILING_NAME), 0)
    print()
    print(f"catalog-api load benchmark, {datetime.now(timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}, "
          f"{os.cpu_count()} cores shared by server, PostgreSQL, Redis and wrk; {args.connections} connections, "
          f"{args.duration} s after {args.warmup} s warm-up; {args.products} products"
          + (" ; local tier on" if args.local_tier else ""))
    print()
    print(format_table(results + scale, baseline, ceiling_rps))
    for result in results:
        if "stale" in result:
            print(f"\nW7 stale reads after the run: {result['stale']} of 1000 products checked")
    if delay_runs:
        print("\nA mutation through one instance, then reads of its product through the other, 50 rounds "
              "(delay: mutation answered -> other instance fresh, including one polling request):")
        print("| instances | load | mutation p50 ms | mutation p99 ms | delay p50 ms | delay max ms | "
              "first read after the answer stale |")
        print("|---|---|---:|---:|---:|---:|---:|")
        for label, local_tier, measured, stale, writes in delay_runs:
            p99 = writes[min(len(writes) - 1, int(len(writes) * 0.99))]
            print(f"| {'first tiers (leased)' if local_tier else 'Redis only'} | {label} | "
                  f"{writes[len(writes) // 2]:.2f} | {p99:.2f} | {measured[len(measured) // 2]:.2f} | "
                  f"{measured[-1]:.2f} | {stale} of {len(measured)} |")
    for result in scale:
        base = next((r for r in results if r["name"] == result["name"].split(" ")[0]), None)
        if base and base["p50"] and result["p50"]:
            print(f"{result['name']}: p50 x{result['p50'] / base['p50']:.2f}, p99 x{(result['p99'] or 0) / (base['p99'] or 1):.2f} "
                  f"of the {args.products // 1000}k figures")


def median_result(measured):
    """One workload's rounds on one setup: each figure is the median over the rounds (the stale
    count is the sum: any stale read counts)."""
    def median(values):
        values = sorted(value or 0 for value in values)
        middle = len(values) // 2
        return values[middle] if len(values) % 2 else (values[middle - 1] + values[middle]) / 2
    result = dict(measured[0])
    for field in ("rps", "p50", "p99", "cpu_us", "redis_cpu_us", "redis_per_request", "sql_per_request", "of_ceiling"):
        if field in result:
            result[field] = median([entry.get(field) for entry in measured])
    if "stale" in result:
        result["stale"] = sum(entry["stale"] for entry in measured)
    return result


def setups_to_compare(args, env):
    """The two setups a side-by-side run puts next to each other: (label, binary, env changes)."""
    if args.cluster:
        url = subprocess.run(["scripts/redis-cluster.sh", "start"], check=True, capture_output=True,
                             text=True).stdout.strip().splitlines()[-1]
        # With --compare, one Redis as the other binary runs it comes first: the cluster against
        # one Redis before the change, and against one Redis now, in the same run.
        before = [("before", args.compare, {})] if args.compare else []
        return before + [("redis", BINARY, {}), ("cluster", BINARY, {"REDIS_URL": url})]
    if args.compare:
        return [("baseline", args.compare, {}), ("candidate", BINARY, {})]
    if args.replica:
        primary, replica = subprocess.run(["scripts/pg-replica.sh", "start"], check=True, capture_output=True,
                                          text=True).stdout.strip().splitlines()[-2:]
        base = primary.rsplit("/", 1)[0]
        return [("primary", BINARY, {"PG": base}),
                ("replica", BINARY, {"PG": base, "REPLICA": replica.rsplit("/", 1)[0]})]
    return []


def stop_setups(args):
    if args.cluster:
        subprocess.run(["scripts/redis-cluster.sh", "stop"], check=False)
    if args.replica:
        subprocess.run(["scripts/pg-replica.sh", "stop"], check=False)


def side_by_side(args, env, port, selected):
    """Runs every workload on two setups (two binaries, single Redis and a cluster, or the primary
    alone and with a read replica), alternately in this one run, and prints both with ratios."""
    global REDIS_NODES
    setups = setups_to_compare(args, env)
    servers, tokens, nodes = {}, {}, {}
    ceiling, ceilings = None, []
    try:
        # Each setup gets its own copy of the data set (two binaries' migrations may differ), its
        # own token and cache prefix; they share the machine and run one workload at a time.
        for offset, (label, binary, changes) in enumerate(setups):
            changes = dict(changes)
            pg = changes.pop("PG", args.pg)
            replica = changes.pop("REPLICA", None)
            database = f"catalog_bench_{label}"
            psql(f"{pg}/postgres", f"DROP DATABASE IF EXISTS {database}")
            psql(f"{pg}/postgres", f"CREATE DATABASE {database}")
            psql(f"{pg}/postgres", f"ALTER DATABASE {database} SET random_page_cost = 1.1")
            server_env = dict(env, CATALOG_BIND=f"127.0.0.1:{port + 1 + offset}",
                              CATALOG_CACHE_PREFIX=f"{env['CATALOG_CACHE_PREFIX']}{label}:",
                              DATABASE_URL=f"{pg}/{database}?sslmode=disable", **changes)
            if replica:
                server_env["DATABASE_REPLICA_URLS"] = f"{replica}/{database}?sslmode=disable"
            seconds = seed(server_env, 50, args.products, binary)
            print(f"{label}: seeded {args.products} products in {seconds:.1f} s", flush=True)
            tokens[label] = subprocess.run([binary, "token", "create", "bench"], env=server_env, check=True,
                                           capture_output=True, text=True).stdout.strip()
            nodes[label] = redis_nodes(server_env["REDIS_URL"])
            servers[label] = Server(server_env, port + 1 + offset, binary)
            servers[label].start()
        results = {label: [] for label in servers}
        for label, server in servers.items():
            prime(server, tokens[label])
        if args.ceiling:
            ceiling = start_ceiling(servers[setups[-1][0]], port)
        scripts = {label: workloads(tokens[label]) for label in servers}
        for name in scripts[setups[-1][0]]:
            if selected and name not in selected and name != "healthz":
                continue
            rounds = {label: [] for label in servers}
            for round_number in range(max(args.rounds, 1)):
                # ABBA: the setups (and the ceiling) swap places every round, so none always runs first.
                order = ([("ceiling", ceiling)] if ceiling else []) + list(servers.items())
                round_ceiling = None
                for label, server in (order if round_number % 2 == 0 else order[::-1]):
                    if server is ceiling:
                        round_ceiling = measure_ceiling(ceiling, args)
                        ceilings.append(round_ceiling)
                        print(f"  {'ceiling':9} {'W1 load':8} {round_ceiling['rps']:9.0f} req/s  "
                              f"p50 {round_ceiling['p50'] or 0:.2f} ms  p99 {round_ceiling['p99'] or 0:.2f} ms  "
                              f"server CPU {round_ceiling['cpu_us']:.0f} µs/req", flush=True)
                        continue
                    REDIS_NODES = nodes[label]
                    _, script, path = scripts[label][name]
                    result = measure(server, name, script, path, args)
                    if name == "W7":
                        result["stale"] = check_no_stale_reads(server)
                    rounds[label].append(result)
                    print(f"  {label:9} {name:8} {result['rps']:9.0f} req/s  p50 {result['p50'] or 0:.2f} ms  "
                          f"p99 {result['p99'] or 0:.2f} ms  server CPU {result['cpu_us']:.0f} µs/req  "
                          f"Redis CPU {result['redis_cpu_us']:.1f} µs/req", flush=True)
                # Each setup against the ceiling measured in the same round, moments apart.
                if round_ceiling and round_ceiling["rps"]:
                    for label in servers:
                        rounds[label][-1]["of_ceiling"] = rounds[label][-1]["rps"] / round_ceiling["rps"]
            for label in servers:
                results[label].append(median_result(rounds[label]))
            # Paired: each round's ratio compares runs made moments apart, so the machine's own
            # drift (it moves whole rounds by up to 30% here) cancels; the table gives their median.
            labels = [label for label, _, _ in setups]
            for i, first_label in enumerate(labels if args.rounds > 1 else []):
                for other in labels[i + 1:]:
                    ratios = sorted(b["rps"] / a["rps"] for a, b in zip(rounds[first_label], rounds[other])
                                    if a["rps"])
                    results[other][-1].setdefault("paired", {})[first_label] = statistics.median(ratios)
                    print(f"  {name}: per-round ratios {other}/{first_label} {', '.join(f'{r:.3f}' for r in ratios)}",
                          flush=True)
    finally:
        for server in servers.values():
            server.stop()
        if ceiling:
            ceiling.stop()
        stop_setups(args)
    # Every setup against the first, and with three, the last two against each other.
    pairs = [(setups[0], other) for other in setups[1:]] + ([(setups[1], setups[2])] if len(setups) > 2 else [])
    for (first, first_binary, _), (second, second_binary, _) in pairs:
        print_pair(args, results, first, first_binary, second, second_binary)
    if ceilings:
        measured = sorted(result["rps"] for result in ceilings)
        print(f"\nceiling ({CEILING_BINARY}, W1's body under W1's load), measured once per round: median "
              f"{statistics.median(measured):.0f} req/s over {len(measured)} runs ({measured[0]:.0f} to "
              f"{measured[-1]:.0f}); \"of ceiling\" is the median of each round's req/s over that round's ceiling")


def print_pair(args, results, first, first_binary, second, second_binary):
    print()
    print(f"catalog-api: {first} ({first_binary}) vs {second} ({second_binary}), same run, "
          f"{datetime.now(timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}, {args.connections} connections, "
          f"{args.duration} s each after {args.warmup} s warm-up; {args.products} products"
          + (f"; medians of {args.rounds} alternating rounds" if args.rounds > 1 else "")
          + (" ; local tier on" if args.local_tier else ""))
    print()
    paired = args.rounds > 1
    print(f"| workload | {first} req/s | {second} req/s | {'ratio (median of per-round ratios)' if paired else 'ratio'} "
          f"| of ceiling ({first} / {second}) | p50 ms ({first} / {second}) "
          f"| p99 ms | server CPU µs/req | Redis CPU µs/req | Redis calls/req | stale |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")

    def of_ceiling(result):
        return f"{result['of_ceiling']:.3f}" if "of_ceiling" in result else "-"
    for base, cand in zip(results[first], results[second]):
        ratio = cand.get("paired", {}).get(first) or (cand["rps"] / base["rps"] if base["rps"] else 0)
        stale = f"{base.get('stale', '-')} / {cand.get('stale', '-')}"
        print(f"| {base['name']} | {base['rps']:.0f} | {cand['rps']:.0f} | {ratio:.3f} | "
              f"{of_ceiling(base)} / {of_ceiling(cand)} | "
              f"{base['p50'] or 0:.2f} / {cand['p50'] or 0:.2f} | {base['p99'] or 0:.2f} / {cand['p99'] or 0:.2f} | "
              f"{base['cpu_us']:.0f} / {cand['cpu_us']:.0f} | {base['redis_cpu_us']:.1f} / {cand['redis_cpu_us']:.1f} | "
              f"{base['redis_per_request']:.2f} / {cand['redis_per_request']:.2f} | {stale} |")


if __name__ == "__main__":
    sys.exit(main())
