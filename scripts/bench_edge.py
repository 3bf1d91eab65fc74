"""The edge mode of the load benchmark (`scripts/bench.sh --edge`): the server purging a
Varnish that runs deploy/varnish/default.vcl, and W1, W3, W5 sent as GETs straight to the
server and through Varnish, side by side in one run; then a mixed workload through Varnish
(1% price updates) showing the edge's hit rate, purges per second and what reaches the origin.
"""

import json
import os
import re
import shutil
import subprocess
import tempfile
import time
import urllib.parse
import urllib.request

VCL = os.path.join(os.path.dirname(__file__), "..", "deploy", "varnish", "default.vcl")


class Varnish:
    def __init__(self, port, backend_port):
        self.port = port
        self.dir = tempfile.mkdtemp(prefix="catalog-bench-varnish-")
        with open(VCL) as shipped:
            vcl = shipped.read().replace('.host = "app";', '.host = "127.0.0.1";').replace(
                '.port = "8000";', f'.port = "{backend_port}";')
        self.vcl = os.path.join(self.dir, "default.vcl")
        with open(self.vcl, "w") as pointed:
            pointed.write(vcl)
        self.process = None

    def start(self):
        self.process = subprocess.Popen(
            ["varnishd", "-F", "-j", "none", "-a", f"127.0.0.1:{self.port}", "-f", self.vcl,
             "-n", os.path.join(self.dir, "instance"), "-s", "malloc,256m"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.time() + 30
        while time.time() < deadline:
            try:
                request = urllib.request.Request(self.url("/"), method="PURGE")
                urllib.request.urlopen(request, timeout=1)
            except urllib.error.HTTPError as error:
                if error.code == 400:  # the VCL's answer to a purge without tags: it runs
                    return
            except Exception:
                pass
            time.sleep(0.2)
        raise SystemExit("varnishd did not start")

    def stop(self):
        if self.process:
            self.process.terminate()
            self.process.wait(timeout=30)
        shutil.rmtree(self.dir, ignore_errors=True)

    def url(self, path):
        return f"http://127.0.0.1:{self.port}{path}"

    def counters(self):
        output = subprocess.run(["varnishstat", "-1", "-n", os.path.join(self.dir, "instance")],
                                capture_output=True, text=True).stdout
        wanted = {}
        for line in output.splitlines():
            parts = line.split()
            if len(parts) >= 2 and parts[0] in ("MAIN.cache_hit", "MAIN.cache_miss", "MAIN.s_pass",
                                                "MAIN.backend_req"):
                wanted[parts[0]] = int(parts[1])
        return wanted

    def cpu_seconds(self):
        """CPU of varnishd's manager and child processes."""
        total = 0.0
        for pid in subprocess.run(["pgrep", "-f", self.vcl], capture_output=True, text=True).stdout.split():
            try:
                with open(f"/proc/{pid}/stat") as stat:
                    fields = stat.read().rsplit(")", 1)[1].split()
                total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
            except OSError:
                pass
        return total


def get_path(query, variables, name):
    return "/graphql?" + urllib.parse.urlencode(
        {"query": query, "variables": json.dumps(variables), "operationName": name})


def server_metric(server, pattern):
    text = urllib.request.urlopen(server.url("/metrics"), timeout=5).read().decode()
    return sum(float(value) for value in re.findall(pattern, text, re.M))


def run(bench, args, env, port, token):
    """Serves, loads and prints the edge table. `bench` is scripts/bench.py as a module."""
    varnish_port = port + 1000
    env = dict(env, CATALOG_EDGE_PURGE="varnish", CATALOG_EDGE_VARNISH_URLS=f"http://127.0.0.1:{varnish_port}")
    server = bench.Server(env, port)
    server.start()
    varnish = Varnish(varnish_port, port)
    varnish.start()
    rows = []
    try:
        bench.prime(server, token)
        auth = f'wrk.headers["Authorization"] = "Bearer {token}"\n'
        gets = {
            "W1": ("hot product", "", get_path(bench.Q_PRODUCT, {"id": "42"}, "ProductById")),
            "W3": ("list, category 7, first 100", "",
                   get_path(bench.Q_LIST, {"filter": {"categoryId": "7"}, "first": 100}, "Products")),
            "W5": ("dashboard with a token (private: passed by the edge)", auth,
                   get_path(bench.Q_DASHBOARD, {}, "Dashboard")),
        }
        for name, (description, script, path) in gets.items():
            for where, target in (("direct", server), ("Varnish", varnish)):
                result = measure_at(bench, server, target, f"{name} GET {where}", script, path, args)
                result["description"] = description
                rows.append(result)
                print(f"  {result['name']:18} {result['rps']:9.0f} req/s  p50 {result['p50'] or 0:.2f} ms  "
                      f"p99 {result['p99'] or 0:.2f} ms", flush=True)
        mixed = mixed_workload(bench, server, varnish, token, args)
    finally:
        varnish.stop()
        server.stop()
    print()
    print(f"edge benchmark: {args.connections} connections, {args.duration} s after {args.warmup} s warm-up, "
          f"{args.products} products; Varnish 7 + xkey on the same {os.cpu_count()} cores")
    print()
    print("| workload | requests/s | p50 ms | p99 ms | errors | server CPU µs/req | Varnish CPU µs/req |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for row in rows:
        print(f"| {row['name']} | {row['rps']:.0f} | {row['p50'] or 0:.2f} | {row['p99'] or 0:.2f} | "
              f"{row['errors']} | {row['cpu_us']:.1f} | {row['varnish_cpu_us']:.1f} |")
    print()
    print(f"mixed through Varnish (99% product reads by random id 1..1000, 1% updateProduct price): "
          f"{mixed['rps']:.0f} req/s, p50 {mixed['p50'] or 0:.2f} ms, p99 {mixed['p99'] or 0:.2f} ms; "
          f"edge hit rate {mixed['hit_rate'] * 100:.1f}%, {mixed['purges_per_s']:.1f} purge requests/s "
          f"({mixed['purge_failures']:.0f} failed), origin {mixed['origin_per_s']:.0f} req/s "
          f"({mixed['origin_share'] * 100:.1f}% of requests); stale reads after the run: {mixed['stale']} of 1000")


def measure_at(bench, server, target, name, script, path, args):
    """bench.measure against `target` (the server or Varnish), with Varnish's CPU beside the server's."""
    class Target:
        url = target.url
        rss_mib = server.rss_mib
        cpu_seconds = server.cpu_seconds
        statements = server.statements
    varnish_cpu = target.cpu_seconds() if isinstance(target, Varnish) else 0.0
    result = bench.measure(Target, name, script, path, args)
    requests = max(result["requests"], 1)
    spent = (target.cpu_seconds() - varnish_cpu) if isinstance(target, Varnish) else 0.0
    result["varnish_cpu_us"] = spent / requests * 1e6
    return result


def mixed_workload(bench, server, varnish, token, args):
    # A Lua format string: the URL's own escapes doubled, the id left to `%d`.
    read = get_path(bench.Q_PRODUCT, {"id": "IDX"}, "ProductById").replace("%", "%%").replace(
        "%%22IDX%%22", "%%22%d%%22")
    write = bench.body(bench.M_PRICE, {"id": "IDX", "input": {"price": "PRICEX"}}, "UpdatePrice").replace(
        '"IDX"', '"%d"').replace('"PRICEX"', '"%d.%02d"')
    script = ("math.randomseed(os.time() + tonumber(tostring({}):sub(8), 16))\n"
              f"local r = {bench.lua_string(read)}\nlocal w = {bench.lua_string(write)}\n"
              f'local auth = {{["Content-Type"] = "application/json", ["Authorization"] = "Bearer {token}"}}\n'
              "request = function()\n"
              "  if math.random(1, 100) <= 1 then\n"
              "    return wrk.format('POST', '/graphql', auth, string.format(w, math.random(1, 1000), "
              "math.random(1, 9999), math.random(0, 99)))\n"
              "  end\n"
              "  return wrk.format('GET', string.format(r, math.random(1, 1000)))\n"
              "end\n")
    bench.run_wrk(varnish, script, "/", args.warmup, args.connections, args.threads)
    before = varnish.counters()
    origin_before = server_metric(server, r"^catalog_graphql_requests_total\{.*\} (\S+)$")
    purges_before = server_metric(server, r'^catalog_edge_purge_requests_total\{result="ok"\} (\S+)$')
    failed_before = server_metric(server, r'^catalog_edge_purge_requests_total\{result="failed"\} (\S+)$')
    output = bench.run_wrk(varnish, script, "/", args.duration, args.connections, args.threads)
    after = varnish.counters()
    result = bench.parse_wrk(output)
    hits = after.get("MAIN.cache_hit", 0) - before.get("MAIN.cache_hit", 0)
    misses = after.get("MAIN.cache_miss", 0) - before.get("MAIN.cache_miss", 0)
    passes = after.get("MAIN.s_pass", 0) - before.get("MAIN.s_pass", 0)
    origin = server_metric(server, r"^catalog_graphql_requests_total\{.*\} (\S+)$") - origin_before
    result["hit_rate"] = hits / max(hits + misses + passes, 1)
    result["purges_per_s"] = (server_metric(
        server, r'^catalog_edge_purge_requests_total\{result="ok"\} (\S+)$') - purges_before) / args.duration
    result["purge_failures"] = server_metric(
        server, r'^catalog_edge_purge_requests_total\{result="failed"\} (\S+)$') - failed_before
    result["origin_per_s"] = origin / args.duration
    result["origin_share"] = origin / max(result["requests"], 1)
    time.sleep(2)  # past the second purge
    stale = 0
    for product_id in range(1, 1001):
        path = get_path(bench.Q_PRODUCT, {"id": str(product_id)}, "ProductById")
        through = json.loads(urllib.request.urlopen(varnish.url(path), timeout=5).read())
        direct = server.post(bench.body(bench.Q_PRODUCT, {"id": str(product_id)}, "ProductById"),
                             {"X-Bypass-Cache": "1"})[1]
        stale += through.get("data") != direct.get("data")
    result["stale"] = stale
    return result
