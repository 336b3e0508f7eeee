#!/usr/bin/env python3
"""Benchmark the HTTP edge with wrk: a node (run_node.py) and the edge (bench/edge_server.py),
each on a free port of 127.0.0.1, in its own process; or, with --cluster, the one-command
cluster (`run_router.py`, which starts 2 nodes itself).

    python3 bench/bench_http.py                        # 10 s each on /ping, /query, /set
    python3 bench/bench_http.py --duration 3           # quick
    python3 bench/bench_http.py --servers cheroot,waitress --rounds 3   # compare WSGI servers
    python3 bench/bench_http.py --cluster --duration 5 # run_router.py as a user runs it

Workloads, each `--connections` (16) keep-alive connections from `--wrk-threads` (2) wrk
threads for `--duration` seconds:

    /ping    GET /ping
    /query   POST /query, the hex of one stored key as text/plain (a Lua script sets method,
             body and Content-Type)
    /set     PUT /set, JSON of a 100-byte text value, a new value (so a new key) per request

Per line: requests/s, latency p50/p99 from wrk, non-2xx replies and socket errors (any makes
the run fail), and CPU time per request of the edge and the node (from /proc). The ratio
/query / /ping is the edge's cost of reaching the database; the goal is >= 0.7x. The node
runs with `--fsync interval` by default, so /set measures the edge rather than the disk.

--cluster measures `run_router.py` with no --nodes instead: its nodes keep their default
`--fsync` (always), everything is unpinned unless --pin split is given, and CPU per request is
given for the router process, its node children and their sum; /set / /ping is printed too.

With several --servers, each round runs every server in turn (fresh edge process, same node)
and the best round of each counts; edge CPU per request is the steadier figure on a busy
machine. wrk comes from Debian (`apt-get install -y wrk`, done here when it is missing).
This is a benchmark, not a test: it exits non-zero only when something failed.
"""
import argparse
import importlib.util
import json
import os
import re
import signal
import sys
import tempfile
from contextlib import ExitStack

from common import (LOCALHOST, BenchError, answers_http_ping, check_running, child_pids,
                    client_to, cpu_seconds, free_port, http_call, interrupt_on_sigterm, launch,
                    run_to_end, split_cpus, start_node, start_router, verdict, wait_ready)
from foreign import ensure_command

BENCH_DIR = os.path.dirname(os.path.abspath(__file__))
CLUSTER_START_TIMEOUT_S = 60.0
GOAL_RATIO = 0.7
VALUE_SIZE = 100

QUERY_LUA = """
wrk.method = "POST"
wrk.body = "{key}"
wrk.headers["Content-Type"] = "text/plain"
"""
# A new value per request: key_for(value) then names a new key every time.
SET_LUA = """
local next_id = 0
function setup(thread)
  next_id = next_id + 1
  thread:set("tid", next_id)
end
local counter = 0
local pad = string.rep("v", {pad})
function request()
  counter = counter + 1
  local value = string.format("%s-%d-%010d", pad, tid or 0, counter)
  local body = '{{"content_type":"text/plain","encoding":"utf-8","value":"' .. value .. '"}}'
  return wrk.format("PUT", "/set", {{["Content-Type"] = "application/json"}}, body)
end
"""


def choose_cpus(mode):
    """{"edge": cpus, "others": cpus} (None: leave it to the kernel).

    split: the edge alone on the last CPU, the node and wrk on the others, as the router
    would be apart from its nodes and clients in a deployment; this also keeps the figures
    steady (see common.split_cpus)."""
    split = split_cpus() if mode == "split" else None
    if split is None:
        if mode == "split":
            print("  (--pin split needs 2 CPUs; running unpinned)", flush=True)
        return {"edge": None, "others": None}
    return {"edge": sorted(split[0]), "others": sorted(split[1])}


def start_edge(workdir, endpoint, server, threads, cpus):
    """The edge (bench/edge_server.py) in front of `endpoint`: (child, HTTP port)."""
    port = free_port()
    edge = launch(f"edge-{server}", [sys.executable, os.path.join(BENCH_DIR, "edge_server.py"),
                                     "--backend", endpoint, "-p", str(port), "--threads",
                                     str(threads), "--server", server], workdir, cpus=cpus)
    wait_ready(edge, answers_http_ping(port))
    return edge, port


def stop_cluster(router):
    """SIGTERM to the router (it stops its nodes); then SIGKILL any node left over."""
    nodes = child_pids(router.pid)
    code = router.stop()
    if code not in (0, -signal.SIGTERM):
        print(f"  the router exited with {code} on SIGTERM", flush=True)
    for pid in nodes:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            continue
        print(f"  node {pid} was still running after the router stopped; killing it", flush=True)
        try:
            os.killpg(pid, signal.SIGKILL)  # each node leads its own process group
        except ProcessLookupError:
            pass


def parse_wrk(output):
    def seconds(text):
        value, unit = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text).groups()
        return float(value) * {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0}[unit]
    result = {"rps": float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1)),
              "requests": int(re.search(r"(\d+) requests in", output).group(1)),
              "non2xx": 0, "socket_errors": 0}
    for quantile in ("50", "99"):
        match = re.search(rf"^\s+{quantile}(?:\.000)?%\s+(\S+)", output, re.M)
        result[f"p{quantile}_ms"] = seconds(match.group(1)) * 1e3 if match else float("nan")
    match = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    if match:
        result["non2xx"] = int(match.group(1))
    match = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output)
    if match:
        result["socket_errors"] = sum(int(n) for n in match.groups())
    return result


def run_wrk(wrk, port, path, script, args, workdir, meters):
    """One wrk run; its figures and, from `meters` (two functions giving CPU seconds so far:
    the edge's, the node's), each one's CPU time per request."""
    command = [wrk, f"-t{args.wrk_threads}", f"-c{args.connections}", f"-d{args.duration}s",
               "--latency", "--timeout", "5s"]
    if script:
        command += ["-s", script]
    command.append(f"http://{LOCALHOST}:{port}{path}")
    before = [meter() for meter in meters]
    code, output = run_to_end("wrk", command, workdir, ours=False, timeout=args.duration + 60,
                              cpus=args.cpus["others"])
    if code != 0:
        raise BenchError(f"wrk failed ({'timed out' if code is None else code}): {output}")
    result = parse_wrk(output)
    requests = max(1, result["requests"])
    result["edge_us"], result["node_us"] = (
        (meter() - start) / requests * 1e6 for meter, start in zip(meters, before))
    return result


def measure(wrk, args, workdir, node, endpoint, server, scripts):
    edge, port = start_edge(workdir, endpoint, server, args.threads, args.cpus["edge"])
    try:
        meters = (lambda: cpu_seconds(edge.pid), lambda: cpu_seconds(node.pid))
        return workloads(wrk, args, port, edge, meters, scripts, workdir)
    finally:
        code = edge.stop()
        if code not in (0, -signal.SIGTERM):
            print(f"  the edge ({server}) exited with {code} on SIGTERM", flush=True)


def workloads(wrk, args, port, front, meters, scripts, workdir):
    """A 1 s warm-up on /ping (connections, threads and their Clients), then each workload;
    `front` is the process serving HTTP."""
    run_wrk(wrk, port, "/ping", None, argparse.Namespace(**{**vars(args), "duration": 1}),
            workdir, meters)
    results = {}
    for name, path, script in (("/ping", "/ping", None), ("/query", "/query", scripts["query"]),
                               ("/set", "/set", scripts["set"])):
        results[name] = run_wrk(wrk, port, path, script, args, workdir, meters)
        check_running(front)
    return results


def write_scripts(workdir, key):
    scripts = {}
    for name, text in (("query", QUERY_LUA.format(key=key.hex())),
                       ("set", SET_LUA.format(pad=VALUE_SIZE - 13))):
        scripts[name] = os.path.join(workdir, f"{name}.lua")
        with open(scripts[name], "w") as script:
            script.write(text)
    return scripts


def keep_best(best, results):
    """Fold one round into `best`: per workload the round with the most requests/s, and the
    lowest edge CPU per request of any round. True if a request failed."""
    failed = False
    for name, r in results.items():
        failed |= bool(r["non2xx"] or r["socket_errors"])
        if name not in best or r["rps"] > best[name]["rps"]:
            best[name] = r
        best[name]["edge_us_min"] = min(r["edge_us"], best[name].get("edge_us_min", float("inf")))
    return failed


def run_cluster(wrk, args):
    """--cluster: the workloads against run_router.py and its own 2 nodes."""
    print(f"cluster benchmark (run_router.py, 2 nodes): {args.connections} connections, "
          f"{args.wrk_threads} wrk threads, {args.duration} s per workload, {os.cpu_count()} "
          f"CPUs (pin: {args.pin} {args.cpus}), {args.rounds} round(s)", flush=True)
    best, failed = {}, False
    with ExitStack() as stack:
        workdir = stack.enter_context(tempfile.TemporaryDirectory(prefix="yaddb-bench-http-"))
        router, _, port = start_router(workdir, ["--data-dir", os.path.join(workdir, "cluster"),
                                                 "--log-level", "WARNING"],
                                       args.cpus["edge"], CLUSTER_START_TIMEOUT_S)
        stack.callback(stop_cluster, router)
        status, body = http_call(port, "PUT", "/set", json.dumps(
            {"content_type": "text/plain", "encoding": "utf-8", "value": "q" * VALUE_SIZE}),
            "application/json")
        if status != 200:
            raise BenchError(f"PUT /set answered {status}: {body[:300]!r}")
        scripts = write_scripts(workdir, bytes.fromhex(next(iter(json.loads(body)))))
        # the router's own CPU, and its children's: the nodes it started
        meters = (lambda: cpu_seconds(router.pid),
                  lambda: sum(cpu_seconds(pid) for pid in child_pids(router.pid)))
        for round_no in range(1, args.rounds + 1):
            print(f"round {round_no}", flush=True)
            results = workloads(wrk, args, port, router, meters, scripts, workdir)
            show("cluster", results, ("router", "nodes"))
            failed |= keep_best(best, results)
    ratios = {name: best[name]["rps"] / best["/ping"]["rps"] for name in ("/query", "/set")}
    print(f"best of rounds (req/s): /ping {best['/ping']['rps']:.0f}  /query "
          f"{best['/query']['rps']:.0f}  /set {best['/set']['rps']:.0f}", flush=True)
    print(f"/query / /ping = {ratios['/query']:.2f}x (goal >= {GOAL_RATIO}x: "
          f"{verdict(ratios['/query'] >= GOAL_RATIO)})   "
          f"/set / /ping = {ratios['/set']:.2f}x", flush=True)
    return finish(args, best, failed)


def run_edge(wrk, args):
    """The workloads against the edge in front of one node, for each of --servers."""
    from edge_server import DEFAULT_SERVER, DEFAULT_THREADS, SERVERS
    args.threads = args.threads or DEFAULT_THREADS
    servers = (args.servers or DEFAULT_SERVER).split(",")
    for server in servers:
        if server not in SERVERS:
            raise BenchError(f"unknown server {server!r}; known: {sorted(SERVERS)}")
        if importlib.util.find_spec(server) is None:  # each is the module of its name
            raise BenchError(f"{server} is not installed: pip install {server} (only "
                             f"{DEFAULT_SERVER} is in requirements.txt)")
    print(f"HTTP edge benchmark: {args.connections} connections, {args.wrk_threads} wrk "
          f"threads, {args.duration} s per workload, edge threads {args.threads}, node "
          f"--fsync {args.fsync}, {os.cpu_count()} CPUs (pin: {args.pin} {args.cpus}); servers "
          f"{', '.join(servers)}, {args.rounds} round(s)", flush=True)

    best = {server: {} for server in servers}
    failed = False
    with ExitStack() as stack:
        workdir = stack.enter_context(tempfile.TemporaryDirectory(prefix="yaddb-bench-http-"))
        node, node_port = start_node(workdir, "node", ["--fsync", args.fsync, "--log-level",
                                                       "WARNING", "master"], args.cpus["others"])
        stack.callback(node.stop)
        with client_to(node_port, timeout=2.0) as client:
            key = client.set(None, "q" * VALUE_SIZE, content_type="text/plain", encoding="utf-8")
        scripts = write_scripts(workdir, key)
        for round_no in range(1, args.rounds + 1):
            print(f"round {round_no}", flush=True)
            for server in servers:
                results = measure(wrk, args, workdir, node, f"tcp://{LOCALHOST}:{node_port}",
                                  server, scripts)
                show(server, results)
                failed |= keep_best(best[server], results)
            check_running(node)

    print("best of rounds (req/s; edge CPU us/req, lowest of rounds):")
    for server in servers:
        b = best[server]
        ratio = b["/query"]["rps"] / b["/ping"]["rps"]
        print(f"  {server:9s} /ping {b['/ping']['rps']:7.0f} ({b['/ping']['edge_us_min']:.0f} us)  "
              f"/query {b['/query']['rps']:7.0f} ({b['/query']['edge_us_min']:.0f} us)  "
              f"/set {b['/set']['rps']:7.0f} ({b['/set']['edge_us_min']:.0f} us)  "
              f"/query / /ping = {ratio:.2f}x (goal >= {GOAL_RATIO}x: "
              f"{verdict(ratio >= GOAL_RATIO)})", flush=True)
    return finish(args, best, failed)


def show(server, results, labels=("edge", "node")):
    for name, r in results.items():
        flag = "" if not (r["non2xx"] or r["socket_errors"]) else \
            f"  !! {r['non2xx']} non-2xx, {r['socket_errors']} socket errors"
        total = f"  all {r['edge_us'] + r['node_us']:5.0f} us/req" if labels[1] == "nodes" else ""
        print(f"  {server:9s} {name:7s} {r['rps']:9.0f} req/s  p50 {r['p50_ms']:6.2f} ms  "
              f"p99 {r['p99_ms']:6.2f} ms  {labels[0]} {r['edge_us']:5.0f} us/req  "
              f"{labels[1]} {r['node_us']:4.0f} us/req{total}{flag}", flush=True)


def finish(args, best, failed) -> int:
    """Write --json if asked; the exit status: 1 if any request failed."""
    if args.json:
        with open(args.json, "w") as out:
            json.dump({"args": vars(args), "best": best}, out, indent=1)
    if failed:
        print("some requests failed (non-2xx or socket errors): see the lines marked !!")
    return int(bool(failed))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=int, default=10, help="seconds per workload")
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--wrk-threads", type=int, default=2)
    parser.add_argument("--threads", type=int, default=None,
                        help="edge WSGI threads (default: the server module's)")
    parser.add_argument("--servers", default=None,
                        help="comma-separated WSGI servers to run (default: the edge's default)")
    parser.add_argument("--rounds", type=int, default=1, help="rounds per server; best counts")
    parser.add_argument("--fsync", default="interval", help="the node's --fsync")
    parser.add_argument("--pin", choices=("split", "none"), default=None,
                        help="split (default without --cluster): the edge (with --cluster the "
                             "router and its nodes) alone on the last CPU, wrk and any node on "
                             "the others; none (default with --cluster): all on every CPU")
    parser.add_argument("--cluster", action="store_true",
                        help="run_router.py with its own 2 nodes instead of a node and the edge")
    parser.add_argument("--json", help="also write every figure to this file")
    args = parser.parse_args(argv)
    args.pin = args.pin or ("none" if args.cluster else "split")
    args.cpus = choose_cpus(args.pin)
    interrupt_on_sigterm()
    try:
        return (run_cluster if args.cluster else run_edge)(ensure_command("wrk", "wrk"), args)
    except BenchError as exc:
        print(f"bench_http: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
