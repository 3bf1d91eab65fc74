#!/usr/bin/env python3
"""Server instructions per request for two builds, workload by workload, side by side.

Requests per second on a 2-core machine that also runs PostgreSQL, Redis and the load
generator move by 15-20 % from one round to the next; callgrind's instruction count does not
(scripts/instructions-per-request.sh). This runs bench.py's workloads under it for both
binaries, each on a database of its own seeded by that binary, and prints one table.

W2 and W7 draw their ids from 1..100 here instead of 1..1000, so that the warm-up (5 s at
valgrind's pace) caches every id and the count is of the steady state, as under wrk at full
speed; W6 registers its persisted query with the first request of each connection.

    scripts/instructions-compare.py BASELINE_BINARY [CANDIDATE_BINARY] [--only W1,W7]
"""

import argparse
import os
import re
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench  # noqa: E402

PG = "postgres://postgres@127.0.0.1:5432"
COUNTER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "instructions-per-request.sh")


def prepare(binary, label):
    database = f"catalog_instructions_{label}"
    bench.psql(f"{PG}/postgres", f"DROP DATABASE IF EXISTS {database}")
    bench.psql(f"{PG}/postgres", f"CREATE DATABASE {database}")
    url = f"{PG}/{database}"
    env = dict(os.environ, DATABASE_URL=url, RUST_LOG="warn")
    bench.seed(env, 50, 2000, binary)
    token = subprocess.run([binary, "token", "create", "instructions"], env=env, check=True,
                           capture_output=True, text=True).stdout.split()[-1]
    return url, token


def scripts(token, directory):
    """name -> (Lua file, path), from bench.py's workloads."""
    out = {}
    for name, (_, lua, path) in bench.workloads(token).items():
        if name in ("W2", "W7"):
            lua = lua.replace("math.random(1, 1000)", "math.random(1, 100)")
        if name == "W6":
            lua = ("local registered = false\n"
                   f"local register = {bench.lua_string(bench.apq_registration())}\n"
                   "request = function()\n"
                   "  if not registered then\n"
                   "    registered = true\n"
                   "    return wrk.format('POST', '/graphql', {['Content-Type'] = 'application/json'}, register)\n"
                   "  end\n"
                   "  return wrk.format('GET')\n"
                   "end\n")
        file = os.path.join(directory, f"{name}.lua")
        with open(file, "w") as handle:
            handle.write(lua)
        out[name] = (file, path)
    return out


def instructions(binary, database, lua, path):
    report = subprocess.run(["bash", COUNTER, binary, database, lua, path], check=True,
                            capture_output=True, text=True).stdout
    return int(re.search(r"instructions/request=(\d+)", report).group(1))


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("baseline")
    parser.add_argument("candidate", nargs="?", default=bench.BINARY)
    parser.add_argument("--only", default="")
    args = parser.parse_args()
    only = [name for name in args.only.split(",") if name]
    builds = {"baseline": args.baseline, "candidate": args.candidate}
    prepared = {label: prepare(binary, label) for label, binary in builds.items()}
    with tempfile.TemporaryDirectory() as directory:
        lua = {}
        for label, (_, token) in prepared.items():
            os.makedirs(os.path.join(directory, label))
            lua[label] = scripts(token, os.path.join(directory, label))
        print("| workload | baseline instructions/request | candidate | candidate / baseline |")
        print("|---|---:|---:|---:|")
        for name in lua["baseline"]:
            if only and name not in only:
                continue
            base, cand = (instructions(binary, prepared[label][0], *lua[label][name])
                          for label, binary in builds.items())
            print(f"| {name} | {base:,} | {cand:,} | {cand / base:.3f} |", flush=True)


if __name__ == "__main__":
    main()
