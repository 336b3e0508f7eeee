#!/usr/bin/env python3
"""The one-command cluster against Redis, as a user runs them (issue 13's table).

YADDB is `run_router.py --data-dir TMP --zmq-port P -p H` with nothing else: 2 partitions,
each a master and 1 slave, as its child processes, every node with --fsync always, CURVE keys
made in TMP/keys. Redis is `redis-server --appendonly yes --appendfsync always --save ''`,
the same durability (every write on disk before its reply), on a free port with a directory
of its own. Clients are yaddb.Client with its defaults (`Client(endpoint)`) and redis-py
(pure-Python parser, as pinned in bench/requirements.txt). Everything runs unpinned, as a user
runs it; --pin puts the servers on the last CPU and the clients on the others.

    workload     YADDB                                      peer                       goal
    set          sync set, one at a time, Client(endpoint)  redis-py set               >= 0.8x
    set-keys     the same, Client(endpoint, keys=TMP/keys)  redis-py set               >= 0.8x
    get          sync get of stored keys, Client(endpoint)  redis-py get               >= 0.9x
    get-keys     the same, with keys                        redis-py get               >= 0.9x
    get-zmq      the same, Client(endpoint, local=False)    redis-py get               info
    get-unix     sync get, Client(endpoint)                 redis-py over Unix socket  info
    mset         mset of 100                                pipeline of 100 sets       >= 0.8x
    mget         mget of 100 stored keys                    pipeline of 100 gets       >= 1.0x
    clients-set  --clients (8) processes of sync sets       the same with redis-py     >= 1.0x
    clients-get  --clients (8) processes of sync gets       the same with redis-py     >= 1.0x
    http         POST /query (a stored key, text/plain hex) GET /ping, same edge       >= 0.7x

Values are 100 bytes. Rounds interleave: in each round every workload runs on YADDB and on its
peer back to back, which one first alternating (by round and workload), for --seconds each
after a short warm-up, on keys of that round's own; reads go over keys written (and checked
readable) before the warm-up. The client processes are spawned, each with its own client,
written, connected and warmed up before a common start time, and count the operations they
finish within the window. http is wrk (-c16, 2 threads) on the cluster's HTTP edge, /query
against /ping: a ratio of two YADDB figures. Printed: per round, then per workload the
medians and ranges over rounds and the paired ratio (the median of each round's YADDB/peer,
as the two halves of a round share the machine's state of that moment) with the goal and
PASS/MISS. A benchmark, not a test: it exits non-zero only when something failed (a read
that found nothing, an HTTP error, a process that died), not for a missed goal.

Run: python3 bench/bench_cluster.py [--rounds 3] [--seconds 3] [--only set,get] [--pin]
     [--json FILE]   (about 4 minutes with the defaults)
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from typing import NamedTuple, Optional

from bench_http import CLUSTER_START_TIMEOUT_S, run_wrk, stop_cluster, write_scripts
from bench_replication import loadavg
from cluster_clients import BATCH, connect, many_clients, one_client, write_pool
from common import (BenchError, check_running, child_pids, cpu_list, cpu_seconds, http_call,
                    interrupt_on_sigterm, print_table, split_cpus, start_router, verdict)
from foreign import ensure_command, ensure_redis, redis_socket, start_redis

VALUE_SIZE = 100
HTTP_WARMUP_S = 1          # wrk on /ping before each http round (connections, edge threads)
SLAVES_TIMEOUT_S = 60.0    # for the cluster's slaves to be ready after it answers


class Workload(NamedTuple):
    name: str
    label: str
    kind: str             # set, get, mset, mget, clients-set, clients-get, http
    ours: str             # the YADDB store: yaddb or yaddb-keys (http: the edge)
    peer: str             # what it is compared with
    goal: Optional[float]  # None: a row for information, with no goal
    unit: str
    peer_store: str = "redis"


WORKLOADS = (
    Workload("set", "sync set, Client(endpoint)", "set", "yaddb", "redis-py set", 0.8, "ops/s"),
    Workload("set-keys", "sync set, Client(endpoint, keys=DATA_DIR/keys)", "set", "yaddb-keys",
             "redis-py set", 0.8, "ops/s"),
    Workload("get", "sync get, Client(endpoint)", "get", "yaddb", "redis-py get", 0.9, "ops/s"),
    Workload("get-keys", "sync get, Client(endpoint, keys=DATA_DIR/keys)", "get", "yaddb-keys",
             "redis-py get", 0.9, "ops/s"),
    Workload("mset", f"mset of {BATCH}", "mset", "yaddb", f"pipeline of {BATCH} sets", 0.8,
             "keys/s"),
    Workload("mget", f"mget of {BATCH}", "mget", "yaddb", f"pipeline of {BATCH} gets", 1.0,
             "keys/s"),
    Workload("clients-set", "{clients} processes, sync sets", "clients-set", "yaddb",
             "redis-py, same", 1.0, "ops/s"),
    Workload("clients-get", "{clients} processes, sync gets", "clients-get", "yaddb",
             "redis-py, same", 1.0, "ops/s"),
    Workload("http", "HTTP POST /query, wrk -c16", "http", "edge", "GET /ping", 0.7, "req/s"),
    # For information: the client's ZeroMQ path, and Redis over its own Unix socket.
    Workload("get-zmq", "sync get, Client(endpoint, local=False)", "get", "yaddb-zmq",
             "redis-py get", None, "ops/s"),
    Workload("get-unix", "sync get, Client(endpoint)", "get", "yaddb",
             "redis-py get, Unix socket", None, "ops/s", "redis-unix"),
)
BY_NAME = {w.name: w for w in WORKLOADS}


# -- a round of a workload ------------------------------------------------------------------


def http_pair(ctx, round_no: int, first: str) -> dict[str, dict]:
    """wrk on POST /query (a key stored this round) and GET /ping, in the order `first` says,
    after a warm-up on /ping; {"/query": figures, "/ping": figures}."""
    round_dir = os.path.join(ctx.work, f"http-{round_no}")
    os.makedirs(round_dir, exist_ok=True)
    key = write_pool(ctx.clients["yaddb"], b"http:r%d:" % round_no, 1, ctx.value)[0]
    scripts = write_scripts(round_dir, key)
    wrk_args = argparse.Namespace(wrk_threads=2, connections=16, duration=HTTP_WARMUP_S,
                                  cpus={"others": ctx.client_cpus})
    meters = (lambda: cpu_seconds(ctx.router.pid),
              lambda: sum(cpu_seconds(pid) for pid in child_pids(ctx.router.pid)))
    run_wrk(ctx.wrk, ctx.http_port, "/ping", None, wrk_args, round_dir, meters)
    wrk_args.duration = max(1, round(ctx.args.seconds))
    out = {}
    for path in (("/query", "/ping") if first == "ours" else ("/ping", "/query")):
        result = run_wrk(ctx.wrk, ctx.http_port, path, scripts["query"] if path == "/query"
                         else None, wrk_args, round_dir, meters)
        result["rate"] = result["rps"]
        result["failed"] = result["non2xx"] + result["socket_errors"]
        out[path] = result
    return out


def run_workload(ctx, workload: Workload, round_no: int, first: str) -> dict[str, dict]:
    """Both halves of one workload's round, `first` ("ours" or "peer") first:
    {"ours": figures, "peer": figures}, each with "rate"."""
    if workload.kind == "http":
        pair = http_pair(ctx, round_no, first)
        return {"ours": pair["/query"], "peer": pair["/ping"]}
    out = {}
    for side in (("ours", "peer") if first == "ours" else ("peer", "ours")):
        store = workload.ours if side == "ours" else workload.peer_store
        prefix = b"%s:r%d:%s:" % (workload.name.encode(), round_no, store.encode())
        if workload.kind.startswith("clients-"):
            out[side] = many_clients(ctx.ports, store, workload.kind.split("-")[1], prefix,
                                     ctx.value, ctx.args.seconds, ctx.args.clients)
        else:
            out[side] = one_client(ctx.clients, store, workload.kind, prefix, ctx.value,
                                   ctx.args.seconds)
        check_running(ctx.router)
        check_running(ctx.redis)
    return out


# -- the cluster, the machine --------------------------------------------------------------

def slaves_ready(http_port: int) -> bool:
    """Whether the router's /stats shows every partition's slaves alive and ready."""
    status, body = http_call(http_port, "GET", "/stats")
    if status != 200:
        return False
    partitions = json.loads(body)["partitions"]
    return bool(partitions) and all(slave.get("alive") and slave.get("ready")
                                    for partition in partitions for slave in partition["slaves"])


def wait_slaves(router, http_port: int) -> None:
    deadline = time.monotonic() + SLAVES_TIMEOUT_S
    while True:
        check_running(router)
        try:
            if slaves_ready(http_port):
                return
        except (OSError, ValueError, KeyError):
            pass
        if time.monotonic() > deadline:
            raise BenchError(f"the cluster's slaves were not all ready within "
                             f"{SLAVES_TIMEOUT_S:g} s:\n{router.log_tail()}")
        time.sleep(0.1)


def machine() -> list[str]:
    """What the figures were measured on, for the top of the output."""
    model = platform.processor() or "?"
    try:
        with open("/proc/cpuinfo") as file:
            model = next((line.split(":", 1)[1].strip() for line in file
                          if line.startswith("model name")), model)
    except OSError:
        pass
    import redis
    import zmq
    try:
        server = subprocess.run(["redis-server", "--version"], capture_output=True, text=True,
                                timeout=10).stdout.split()[2].lstrip("v=")
    except (OSError, IndexError, subprocess.SubprocessError):
        server = "?"
    parser = "hiredis" if getattr(redis.utils, "HIREDIS_AVAILABLE", False) else "python"
    return [f"machine: {model}, {os.cpu_count()} CPUs; {platform.system()} {platform.release()}; "
            f"load average {loadavg()}",
            f"Python {platform.python_version()} ({platform.python_implementation()}); pyzmq "
            f"{zmq.__version__} (libzmq {zmq.zmq_version()}); redis-server {server}; redis-py "
            f"{redis.__version__} (parser: {parser})"]


# -- the report ----------------------------------------------------------------------------

def spread(values: list[float], fmt: str) -> str:
    return f"{min(values):{fmt}}-{max(values):{fmt}}" if len(values) > 1 else "-"


def report(args, chosen: list[Workload], results: dict) -> list[str]:
    """The table of medians, ranges and paired ratios with the goals; the goals missed."""
    rows = [("workload", "YADDB", "(range)", "peer", "(range)", "unit", "compared with",
             "paired ratio", "(range)", "goal", "")]
    misses = []
    for w in chosen:
        rounds = results[w.name]
        ours = [r["ours"]["rate"] for r in rounds]
        peer = [r["peer"]["rate"] for r in rounds]
        ratios = [o / p if p else 0.0 for o, p in zip(ours, peer)]
        ratio = statistics.median(ratios)
        if w.goal is not None and ratio < w.goal:
            misses.append(w.name)
        rows.append((w.name, f"{statistics.median(ours):,.0f}", spread(ours, ",.0f"),
                     f"{statistics.median(peer):,.0f}", spread(peer, ",.0f"), w.unit, w.peer,
                     f"{ratio:.2f}x", spread(ratios, ".2f"),
                     "-" if w.goal is None else f">= {w.goal}x",
                     "INFO" if w.goal is None else verdict(ratio >= w.goal)))
    print(f"\nYADDB one-command cluster vs redis-server (appendfsync always): medians of "
          f"{args.rounds} round(s) of {args.seconds:g} s; paired ratio = median of each "
          f"round's YADDB/peer:")
    print_table(rows, align="<>>>><<>><<", indent="  ")
    print("  rows: " + "; ".join(f"{w.name} = {w.label.format(clients=args.clients)}"
                                 for w in chosen))
    return misses


def show_round(workload: Workload, round_no: int, first: str, pair: dict) -> None:
    ours, peer = pair["ours"], pair["peer"]
    notes = ""
    for side in ("ours", "peer"):
        if pair[side].get("misses"):
            notes += f"  !! {side}: {pair[side]['misses']} reads found nothing"
        if pair[side].get("failed"):
            notes += f"  !! {side}: {pair[side]['failed']} HTTP errors"
    print(f"  round {round_no} {workload.name:<12} YADDB {ours['rate']:>9,.0f}  "
          f"{workload.peer:<20} {peer['rate']:>9,.0f} {workload.unit:<6}  "
          f"{ours['rate'] / peer['rate'] if peer['rate'] else 0:.2f}x  "
          f"({'YADDB' if first == 'ours' else 'peer'} first){notes}", flush=True)


# -- main ----------------------------------------------------------------------------------

class Context:
    """What the workloads share: servers, ports, clients of this process, options."""

    def __init__(self, args, work: str) -> None:
        self.args, self.work = args, work
        self.value = os.urandom(VALUE_SIZE)
        self.clients: dict = {}
        self.router = self.redis = None
        self.ports: dict = {}
        self.http_port = 0
        self.wrk = ""
        self.client_cpus: Optional[set[int]] = None


def run(args, stack: ExitStack, chosen: list[Workload]) -> tuple[dict, bool]:
    work = stack.enter_context(tempfile.TemporaryDirectory(prefix="yaddb-bench-cluster-"))
    ctx = Context(args, work)
    placement = split_cpus() if args.pin else None
    server_cpus = placement[0] if placement else None
    ctx.client_cpus = placement[1] if placement else None
    if any(w.kind == "http" for w in chosen):
        ctx.wrk = ensure_command("wrk", "wrk")
    data_dir = os.path.join(work, "cluster")
    started = time.monotonic()
    router, zmq_port, ctx.http_port = start_router(work, ["--data-dir", data_dir,
                                                         *args.router_arg],
                                                   server_cpus, CLUSTER_START_TIMEOUT_S)
    stack.callback(stop_cluster, router)
    wait_slaves(router, ctx.http_port)
    ctx.router = router
    print(f"cluster: run_router.py --data-dir TMP/cluster --zmq-port {zmq_port} -p "
          f"{ctx.http_port} {' '.join(args.router_arg)} (2 partitions, master + 1 slave each, fsync always), ready with "
          f"its slaves in {time.monotonic() - started:.1f} s", flush=True)
    ctx.redis, redis_port = start_redis(work, "always", server_cpus)
    stack.callback(ctx.redis.stop)
    print(f"redis: redis-server --port {redis_port} --appendonly yes --appendfsync always "
          f"--save ''", flush=True)
    print("placement: " + (f"servers on CPU {cpu_list(server_cpus)}, clients on CPU "
                            f"{cpu_list(ctx.client_cpus)}" if placement else
                            "unpinned (the kernel places every process)"), flush=True)
    ctx.ports = {"zmq": zmq_port, "redis": redis_port, "keys": os.path.join(data_dir, "keys"),
                 "redis-unix": redis_socket(work)}
    for store in {w.ours for w in chosen if w.kind != "http"} | {w.peer_store for w in chosen} | (
            {"yaddb"} if any(w.kind == "http" for w in chosen) else set()):
        ctx.clients[store] = connect(store, ctx.ports)
        stack.callback(ctx.clients[store].close)

    results: dict[str, list] = {w.name: [] for w in chosen}
    failed = False
    for round_no in range(1, args.rounds + 1):
        print(f"round {round_no} of {args.rounds}", flush=True)
        for index, workload in enumerate(chosen):
            first = "ours" if (round_no + index) % 2 else "peer"
            pair = run_workload(ctx, workload, round_no, first)
            pair["first"] = first
            results[workload.name].append(pair)
            show_round(workload, round_no, first, pair)
            failed |= any(pair[side].get("misses") or pair[side].get("failed")
                          for side in ("ours", "peer"))
    return results, failed


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3, help="rounds, YADDB and peer interleaved")
    parser.add_argument("--seconds", type=float, default=3.0,
                        help="timed seconds per workload per side per round")
    parser.add_argument("--only", default="",
                        help="comma-separated workloads (default all): " + ",".join(BY_NAME))
    parser.add_argument("--clients", type=int, default=8,
                        help="processes of the clients-set and clients-get workloads")
    parser.add_argument("--pin", action="store_true",
                        help="servers on the last CPU, this process, client processes and wrk "
                             "on the others (default: unpinned, as a user runs them)")
    parser.add_argument("--json", metavar="FILE", help="also write every figure as JSON")
    parser.add_argument("--router-arg", action="append", default=[], metavar="ARG",
                        help="one more run_router.py argument (repeat it), to compare a "
                             "setting: --router-arg=--slave-fsync --router-arg=always")
    args = parser.parse_args(argv)
    names = [name.strip() for name in args.only.split(",") if name.strip()] or list(BY_NAME)
    unknown = [name for name in names if name not in BY_NAME]
    if unknown:
        parser.error(f"unknown workload(s) {', '.join(unknown)}; known: {', '.join(BY_NAME)}")
    if args.rounds < 1 or args.seconds <= 0 or not 1 <= args.clients <= 64:
        parser.error("--rounds and --seconds must be positive, --clients 1 to 64")
    chosen = [w for w in WORKLOADS if w.name in names]
    if args.pin:
        placement = split_cpus()
        if placement is None:
            print("(--pin needs 2 CPUs; running unpinned)")
            args.pin = False
        else:
            os.sched_setaffinity(0, placement[1])  # before any thread (ZeroMQ's) starts
    interrupt_on_sigterm()
    started = time.monotonic()
    try:
        ensure_redis()
        print("\n".join(machine()), flush=True)
        with ExitStack() as stack:
            results, failed = run(args, stack, chosen)
            print("stopping the cluster and redis-server", flush=True)
    except BenchError as exc:
        print(f"bench_cluster: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\nbench_cluster: interrupted; servers stopped", file=sys.stderr)
        return 130
    misses = report(args, chosen, results)
    print(f"load average at end: {loadavg()}; {time.monotonic() - started:.0f} s in all; goals "
          f"missed: {len(misses)}" + (f" ({', '.join(misses)})" if misses else ""))
    if args.json:
        with open(args.json, "w") as out:
            json.dump({"args": vars(args), "machine": machine(), "results": results,
                       "goals": {w.name: w.goal for w in chosen}}, out, indent=1, default=str)
    if failed:
        print("some reads found nothing or HTTP requests failed: see the lines marked !!")
    return int(failed)


if __name__ == "__main__":
    sys.exit(main())
