"""The cost of the router hop: the same sync requests straight to a node, through a bare
C `zmq.proxy` (ROUTER to DEALER) in front of it, through `run_router.py --nodes`, and from a
client that asks the router for the partition map and then routes by itself (direct=True).

Prints ops/s for each path and the ratio router / proxy (the issue's goal: >= 0.9x). Then
--clients (8) client processes at once, each its own Client and --ops/4 keys of its own,
through the router, with client-side routing and with redis-py: aggregate ops/s (all ops over
the time from a common start to the last finish) and the ratios to redis-py.
Run: python3 bench/bench_router.py [--ops 10000] [--rounds 3] [--clients 8]
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time

from common import (LOCALHOST, SPAWN, BenchError, answers_ping, client_to, cpu_list, free_port,
                    interrupt_on_sigterm, launch, reap, split_cpus, start_node, start_router,
                    stop_all, verdict, wait_ready)
from foreign import redis_available, redis_client, start_redis

PROXY = """
import os, sys, zmq
from yaddb.supervisor import PARENT_FD_VARIABLE, watch_parent
watch_parent(int(os.environ[PARENT_FD_VARIABLE]), lambda: os._exit(0))  # ends with the bench
ctx = zmq.Context()
front, back = ctx.socket(zmq.ROUTER), ctx.socket(zmq.DEALER)
front.bind(sys.argv[1]); back.connect(sys.argv[2])
try:
    zmq.proxy(front, back)
except KeyboardInterrupt:
    pass
"""
PROXY_GOAL = 0.9        # router / bare proxy hop
REDIS_GOAL = 0.6        # native client / redis-py


def timed(set_, get, ops: int, prefix: bytes = b"key") -> float:
    """Sync set then get of `ops` keys, one at a time; ops/s over both."""
    value = b"v" * 100
    started = time.perf_counter()
    for i in range(ops):
        set_(b"%s%08d" % (prefix, i), value)
    for i in range(ops):
        get(b"%s%08d" % (prefix, i))
    return 2 * ops / (time.perf_counter() - started)


def connect(target: tuple):
    """A client for ("redis", port), ("router", port) or ("direct", port): client-side routing."""
    kind, port = target
    if kind == "redis":
        return redis_client(port)
    return client_to(port, timeout=5.0, direct=kind == "direct")


def client_process(target: tuple, ops: int, prefix: bytes, barrier, done) -> None:
    """One of --clients: connect, wait for the others, time its own keys; put its finish time."""
    client = connect(target)
    try:
        client.ping()
        barrier.wait()
        timed(client.set, client.get, ops, prefix)
        done.put(time.time())
    finally:
        client.close()


def measure_clients(target: tuple, clients: int, ops: int) -> float:
    """Aggregate ops/s of `clients` processes at once: all ops / (common start to last finish)."""
    barrier, done = SPAWN.Barrier(clients + 1), SPAWN.Queue()
    procs = [SPAWN.Process(target=client_process, args=(target, ops, b"c%d-" % n, barrier, done))
             for n in range(clients)]
    for proc in procs:
        proc.start()
    try:
        barrier.wait(60)
        started = time.time()
        last = max(done.get(timeout=600) for _ in procs)
    finally:
        reap(procs, timeout=30)
    return 2 * ops * clients / (last - started)


def measure(target: tuple, ops: int) -> float:
    """Sync set+get ops/s of one client in this process."""
    client = connect(target)
    try:
        client.ping()
        return timed(client.set, client.get, ops)
    finally:
        client.close()


def placed(server_cpus, clients: str) -> str:
    if not server_cpus:
        return "unpinned"
    return (f"servers on CPU {cpu_list(server_cpus)}, "
            f"{clients} on CPU {cpu_list(os.sched_getaffinity(0))}")


def run(args, work: str, server_cpus, children: list) -> None:
    """Start the servers (each added to `children` for the caller to stop), measure, print."""
    node, node_port = start_node(work, "node", ["--fsync", "interval", "master"], server_cpus)
    children.append(node)
    proxy_port = free_port()
    proxy = launch("proxy", [sys.executable, "-c", PROXY, f"tcp://{LOCALHOST}:{proxy_port}",
                             f"tcp://{LOCALHOST}:{node_port}"], work, cpus=server_cpus)
    children.append(proxy)
    wait_ready(proxy, answers_ping(proxy_port))
    router, router_port, _ = start_router(work, ["--nodes", f"{LOCALHOST}:{node_port}"],
                                          server_cpus)
    children.append(router)
    paths = {"direct": ("node", node_port), "C zmq.proxy hop": ("node", proxy_port),
             "router hop": ("router", router_port), "client-side routing": ("direct", router_port)}
    best = {name: 0.0 for name in paths}
    for _ in range(args.rounds):
        for name, target in paths.items():
            best[name] = max(best[name], measure(target, args.ops))
    print(f"sync set+get, {args.ops} keys each, best of {args.rounds} (ops/s), "
          f"{placed(server_cpus, 'client')}:")
    for name, rate in best.items():
        print(f"  {name:<18} {rate:10,.0f}   {rate / best['direct']:.2f}x direct")
    ratio = best["router hop"] / best["C zmq.proxy hop"]
    print(f"router / bare proxy hop: {ratio:.2f}x  ({verdict(ratio >= PROXY_GOAL)}, "
          f"goal {PROXY_GOAL}x)")
    if not redis_available():
        print("redis-server or redis-py missing (bench/bench_node.py installs them): no Redis peer")
        return
    redis, redis_port = start_redis(work, "everysec", server_cpus)
    children.append(redis)
    rate = max(measure(("redis", redis_port), args.ops) for _ in range(args.rounds))
    print(f"  {'redis-py to redis':<18} {rate:10,.0f}")
    for name in ("router hop", "client-side routing"):
        ratio = best[name] / rate
        print(f"native client, {name} / redis-py: {ratio:.2f}x  "
              f"({verdict(ratio >= REDIS_GOAL)}, goal {REDIS_GOAL}x)")
    if args.clients > 0:
        ops = max(1, args.ops // 4)
        targets = {"router hop": ("router", router_port),
                   "client-side routing": ("direct", router_port),
                   "redis-py to redis": ("redis", redis_port)}
        rates = {name: 0.0 for name in targets}
        for _ in range(args.rounds):
            for name, target in targets.items():
                rates[name] = max(rates[name], measure_clients(target, args.clients, ops))
        print(f"{args.clients} client processes at once, {ops} keys each, best of "
              f"{args.rounds} (aggregate ops/s), {placed(server_cpus, 'clients')}:")
        for name, rate in rates.items():
            print(f"  {name:<20} {rate:10,.0f}   {rate / rates['redis-py to redis']:.2f}x redis-py")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ops", type=int, default=10000)
    parser.add_argument("--rounds", type=int, default=3, help="best of this many, paths interleaved")
    parser.add_argument("--pin", choices=["split", "none"], default="split",
                        help="split: servers on the last CPU, this client on the others")
    parser.add_argument("--clients", type=int, default=8,
                        help="client processes at once, --ops/4 keys each (0: skip)")
    args = parser.parse_args()
    # Servers on one CPU, the measuring client on the other, as on two machines: unpinned,
    # where the kernel happens to place them decides more than the code.
    placement = split_cpus() if args.pin == "split" else None
    if placement:
        os.sched_setaffinity(0, placement[1])
    interrupt_on_sigterm()
    work = tempfile.mkdtemp(prefix="yaddb-router-bench-")
    children: list = []
    try:
        run(args, work, placement[0] if placement else None, children)
        return 0
    except BenchError as exc:
        print(f"bench_router: {exc}", file=sys.stderr)
        return 1
    finally:
        stop_all(children)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
