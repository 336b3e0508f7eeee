#!/usr/bin/env python3
"""What /metrics through prometheus_client costs: /query throughput and the cost of a scrape, of
two checkouts side by side (a baseline and this one), each as the one-command cluster
(`run_router.py` and its 2 nodes), both running for the whole benchmark.

    git worktree add /tmp/yaddb-before <commit>     # or any copy of the tree, e.g. the files
                                                    # as they were, over a copy of this one
    python3 bench/bench_metrics.py --before /tmp/yaddb-before
    python3 bench/bench_metrics.py --before /tmp/yaddb-before --rounds 4 --duration 3  # quick

Rounds interleave the two (before, after; then after, before; ...), so a slow patch of a
shared machine hits both alike, and each round gives paired ratios after / before:

    /query   wrk, `--connections` (16) keep-alive connections from 2 threads for `--duration`
             s: POST /query of one stored key (hex, text/plain), as bench_http.py does;
             requests/s, and the router process's CPU per request (from /proc)
    scrape   `--scrapes` (200) GET /metrics in a row on one connection, with no other load:
             median and p99 latency, the router's CPU per scrape, and the reply's size

The summary gives each figure's median paired ratio and its range over the rounds; the goal
is a /query ratio >= 0.95 (the library may cost at most 5 %).
This is a benchmark, not a test: it exits non-zero only when something failed.
"""
import argparse
import http.client
import json
import math
import os
import statistics
import sys
import tempfile
import time
from contextlib import ExitStack

from common import (LOCALHOST, REPO_ROOT, BenchError, answers_http_ping, cpu_seconds,
                    free_port, http_call, interrupt_on_sigterm, percentiles, print_table,
                    run_to_end, verdict, wait_ready)
from bench_http import CLUSTER_START_TIMEOUT_S, QUERY_LUA, parse_wrk, stop_cluster
from foreign import ensure_command
from yaddb.supervisor import Child

GOAL_RATIO = 0.95
VALUE_SIZE = 100


class Cluster:
    """run_router.py of one checkout (its own yaddb, nodes included), on free ports."""

    def __init__(self, name, tree, workdir):
        self.name, self.tree = name, os.path.abspath(tree)
        self.port = free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("YADDB_")}
        env["PYTHONPATH"] = self.tree  # its own yaddb for the router and the nodes it starts
        data = os.path.join(workdir, f"{name}-data")
        self.child = Child(name, [sys.executable, os.path.join(self.tree, "run_router.py"),
                                  "-p", str(self.port), "--zmq-port", str(free_port()),
                                  "--data-dir", data, "--log-level", "WARNING"],
                           log_path=os.path.join(workdir, name + ".log"), env=env, cwd=workdir)
        self.child.start()
        wait_ready(self.child, answers_http_ping(self.port), CLUSTER_START_TIMEOUT_S)
        status, body = http_call(self.port, "PUT", "/set", json.dumps(
            {"content_type": "text/plain", "encoding": "utf-8", "value": "q" * VALUE_SIZE}),
            "application/json")
        if status != 200:
            raise BenchError(f"{name}: PUT /set answered {status}: {body[:300]!r}")
        self.script = os.path.join(workdir, f"{name}-query.lua")
        with open(self.script, "w") as script:
            script.write(QUERY_LUA.format(key=next(iter(json.loads(body)))))

    @property
    def pid(self):
        return self.child.pid

    def stop(self):
        stop_cluster(self.child)


def query_load(wrk, cluster, args, workdir, duration=None):
    """One wrk run of POST /query: requests/s and the router's CPU microseconds per request."""
    duration = duration or args.duration
    before = cpu_seconds(cluster.pid)
    code, output = run_to_end("wrk", [wrk, "-t2", f"-c{args.connections}", f"-d{duration}s",
                                      "--latency", "--timeout", "5s", "-s", cluster.script,
                                      f"http://{LOCALHOST}:{cluster.port}/query"],
                              workdir, ours=False, timeout=duration + 60)
    if code != 0:
        raise BenchError(f"wrk failed ({'timed out' if code is None else code}): {output}")
    result = parse_wrk(output)
    if result["non2xx"] or result["socket_errors"]:
        raise BenchError(f"{cluster.name}: {result['non2xx']} non-2xx replies, "
                         f"{result['socket_errors']} socket errors:\n{output}")
    result["router_us"] = (cpu_seconds(cluster.pid) - before) / max(1, result["requests"]) * 1e6
    return result


def scrapes(cluster, count):
    """`count` GET /metrics in a row on one connection: latencies (ms), the router's CPU
    microseconds per scrape, bytes of the last reply."""
    conn = http.client.HTTPConnection(LOCALHOST, cluster.port, timeout=10)
    latencies, size = [], 0
    before = cpu_seconds(cluster.pid)
    try:
        for _ in range(count):
            started = time.perf_counter()
            conn.request("GET", "/metrics")
            reply = conn.getresponse()
            body = reply.read()
            latencies.append((time.perf_counter() - started) * 1e3)
            if reply.status != 200:
                raise BenchError(f"{cluster.name}: GET /metrics answered {reply.status}")
            size = len(body)
    finally:
        conn.close()
    return {"p50_ms": statistics.median(latencies), "p99_ms": percentiles(latencies, 0.99)[0],
            "cpu_us": (cpu_seconds(cluster.pid) - before) / count * 1e6, "bytes": size}


def spread(values):
    """median [min .. max]"""
    return f"{statistics.median(values):.3f} [{min(values):.3f} .. {max(values):.3f}]"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--before", required=True, help="the baseline checkout (a directory)")
    parser.add_argument("--after", default=REPO_ROOT, help="default: this checkout")
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--duration", type=int, default=5, help="seconds per /query run")
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--scrapes", type=int, default=200, help="GET /metrics per round")
    parser.add_argument("--json", help="also write every figure to this file")
    args = parser.parse_args(argv)
    interrupt_on_sigterm()
    try:
        return run(ensure_command("wrk", "wrk"), args)
    except BenchError as exc:
        print(f"bench_metrics: {exc}", file=sys.stderr)
        return 1


def run(wrk, args):
    print(f"/metrics cost: before {args.before}, after {args.after}; {args.rounds} rounds of "
          f"{args.duration} s /query ({args.connections} connections) and {args.scrapes} "
          f"scrapes each; {os.cpu_count()} CPUs, unpinned", flush=True)
    rounds = []
    with ExitStack() as stack:
        workdir = stack.enter_context(tempfile.TemporaryDirectory(prefix="yaddb-bench-metrics-"))
        clusters = {}
        for name, tree in (("before", args.before), ("after", args.after)):
            clusters[name] = Cluster(name, tree, workdir)
            stack.callback(clusters[name].stop)
        for cluster in clusters.values():  # warm-up: connections, threads and their Clients
            query_load(wrk, cluster, args, workdir, duration=1)
            scrapes(cluster, 10)
        for number in range(args.rounds):
            order = ("before", "after") if number % 2 == 0 else ("after", "before")
            figures = {name: {} for name in order}
            for name in order:
                figures[name]["query"] = query_load(wrk, clusters[name], args, workdir)
            for name in order:
                figures[name]["scrape"] = scrapes(clusters[name], args.scrapes)
            rounds.append(figures)
            b, a = figures["before"], figures["after"]
            print(f"round {number + 1} ({order[0]} first): /query before "
                  f"{b['query']['rps']:7.0f} req/s ({b['query']['router_us']:4.0f} us router CPU)"
                  f", after {a['query']['rps']:7.0f} ({a['query']['router_us']:4.0f} us), ratio "
                  f"{a['query']['rps'] / b['query']['rps']:.3f}; scrape p50 "
                  f"{b['scrape']['p50_ms']:.2f} -> {a['scrape']['p50_ms']:.2f} ms, CPU "
                  f"{b['scrape']['cpu_us']:.0f} -> {a['scrape']['cpu_us']:.0f} us, "
                  f"{b['scrape']['bytes']} -> {a['scrape']['bytes']} bytes", flush=True)

    def figure(name, part, field):
        return [r[name][part][field] for r in rounds]

    def ratios(part, field):
        return [a / b if b else math.nan
                for a, b in zip(figure("after", part, field), figure("before", part, field))]

    rows = [["figure", "before (median)", "after (median)", "after / before: median [min .. max]"]]
    for label, part, field in (("/query req/s", "query", "rps"),
                               ("/query router CPU us/req", "query", "router_us"),
                               ("/query p50 ms", "query", "p50_ms"),
                               ("/metrics p50 ms", "scrape", "p50_ms"),
                               ("/metrics p99 ms", "scrape", "p99_ms"),
                               ("/metrics router CPU us/scrape", "scrape", "cpu_us"),
                               ("/metrics bytes", "scrape", "bytes")):
        rows.append([label, f"{statistics.median(figure('before', part, field)):.2f}",
                     f"{statistics.median(figure('after', part, field)):.2f}",
                     spread(ratios(part, field))])
    print_table(rows)
    ratio = statistics.median(ratios("query", "rps"))
    geomean = math.exp(statistics.fmean(math.log(r) for r in ratios("query", "rps")))
    print(f"/query after / before: median {ratio:.3f}, geometric mean {geomean:.3f} "
          f"(goal >= {GOAL_RATIO}: {verdict(ratio >= GOAL_RATIO)})", flush=True)
    if args.json:
        with open(args.json, "w") as out:
            json.dump({"args": vars(args), "rounds": rounds}, out, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
