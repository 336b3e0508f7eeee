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
import multiprocessing
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from yaddb import Client  # noqa: E402
from yaddb.errors import YaddbError  # noqa: E402

PROXY = """
import sys, zmq
ctx = zmq.Context()
front, back = ctx.socket(zmq.ROUTER), ctx.socket(zmq.DEALER)
front.bind(sys.argv[1]); back.connect(sys.argv[2])
try:
    zmq.proxy(front, back)
except KeyboardInterrupt:
    pass
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


SERVER_CPUS = {1}  # servers on one CPU, the measuring client on the other, as on two machines:
CLIENT_CPUS = {0}  # unpinned, where the kernel happens to place them decides more than the code


def start(args: list[str], log_dir: str, name: str, pin: bool) -> subprocess.Popen:
    log = open(os.path.join(log_dir, name + ".log"), "wb")
    env = dict(os.environ, PYTHONPATH=ROOT)
    prefix = ["taskset", "-c", ",".join(map(str, SERVER_CPUS))] if pin else []
    return subprocess.Popen([*prefix, sys.executable, *args], stdout=log, stderr=subprocess.STDOUT,
                            env=env, start_new_session=True)


def wait_ready(endpoint: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    with Client(endpoint, timeout=1.0) as client:
        while time.monotonic() < deadline:
            try:
                if client.ping():
                    return
            except YaddbError:
                pass
    raise SystemExit(f"{endpoint} did not answer within {timeout} s")


def timed(set_, get, ops: int, prefix: bytes = b"key") -> float:
    """Sync set then get of `ops` keys, one at a time; ops/s over both."""
    value = b"v" * 100
    started = time.perf_counter()
    for i in range(ops):
        set_(b"%s%08d" % (prefix, i), value)
    for i in range(ops):
        get(b"%s%08d" % (prefix, i))
    return 2 * ops / (time.perf_counter() - started)


def client_process(target: tuple, ops: int, prefix: bytes, barrier, done) -> None:
    """One of --clients: connect, wait for the others, time its own keys; put its finish time."""
    if target[0] == "redis":
        import redis
        client = redis.Redis(host="127.0.0.1", port=target[1])
    else:
        client = Client(target[1], timeout=5.0, direct=target[0] == "direct")
    try:
        client.ping()
        barrier.wait()
        timed(client.set, client.get, ops, prefix)
        done.put(time.time())
    finally:
        client.close()


def measure_clients(target: tuple, clients: int, ops: int) -> float:
    """Aggregate ops/s of `clients` processes at once: all ops / (common start to last finish)."""
    ctx = multiprocessing.get_context("spawn")  # no ZeroMQ context inherited by fork
    barrier, done = ctx.Barrier(clients + 1), ctx.Queue()
    procs = [ctx.Process(target=client_process, args=(target, ops, b"c%d-" % n, barrier, done))
             for n in range(clients)]
    for proc in procs:
        proc.start()
    try:
        barrier.wait(60)
        started = time.time()
        last = max(done.get(timeout=600) for _ in procs)
    finally:
        for proc in procs:
            proc.join(30)
            if proc.is_alive():
                proc.kill()
                proc.join()
    return 2 * ops * clients / (last - started)


def measure(endpoint: str, ops: int, direct: bool = False) -> float:
    with Client(endpoint, timeout=5.0, direct=direct) as client:
        client.ping()
        return timed(client.set, client.get, ops)


def measure_redis(port: int, ops: int) -> float:
    """The same workload with redis-py against redis-server: the peer of the native client."""
    import redis
    client = redis.Redis(host="127.0.0.1", port=port)
    try:
        client.ping()
        return timed(client.set, client.get, ops)
    finally:
        client.close()


def start_redis(work: str, pin: bool) -> tuple[subprocess.Popen, int] | None:
    """redis-server with persistence like our --fsync interval, or None if it is not installed
    (bench/bench_node.py installs it)."""
    if shutil.which("redis-server") is None:
        return None
    try:
        import redis
    except ImportError:
        return None
    port = free_port()
    prefix = ["taskset", "-c", ",".join(map(str, SERVER_CPUS))] if pin else []
    proc = subprocess.Popen([*prefix, "redis-server", "--port", str(port), "--bind", "127.0.0.1",
                             "--dir", work, "--save", "", "--appendonly", "yes",
                             "--appendfsync", "everysec"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            redis.Redis(host="127.0.0.1", port=port).ping()
            return proc, port
        except redis.ConnectionError:
            time.sleep(0.05)
    raise SystemExit("redis-server did not start")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ops", type=int, default=10000)
    parser.add_argument("--rounds", type=int, default=3, help="best of this many, paths interleaved")
    parser.add_argument("--pin", choices=["split", "none"], default="split",
                        help="split: servers on CPU 1, this client on CPU 0 (needs taskset)")
    parser.add_argument("--clients", type=int, default=8,
                        help="client processes at once, --ops/4 keys each (0: skip)")
    args = parser.parse_args()
    pin = args.pin == "split" and shutil.which("taskset") is not None and os.cpu_count() >= 2
    if pin:
        os.sched_setaffinity(0, CLIENT_CPUS)
    work = tempfile.mkdtemp(prefix="yaddb-router-bench-")
    procs: list[subprocess.Popen] = []
    try:
        node_port, proxy_port, router_port = free_port(), free_port(), free_port()
        procs.append(start([os.path.join(ROOT, "run_node.py"), "-p", str(node_port), "--data-dir",
                            os.path.join(work, "node"), "--fsync", "interval", "master"], work, "node", pin))
        node = f"tcp://127.0.0.1:{node_port}"
        wait_ready(node)
        procs.append(start(["-c", PROXY, f"tcp://127.0.0.1:{proxy_port}", node], work, "proxy", pin))
        procs.append(start([os.path.join(ROOT, "run_router.py"), "--nodes", f"127.0.0.1:{node_port}",
                            "--zmq-port", str(router_port), "-p", str(free_port())], work, "router", pin))
        router = f"tcp://127.0.0.1:{router_port}"
        paths = {"direct": (node, False), "C zmq.proxy hop": (f"tcp://127.0.0.1:{proxy_port}", False),
                 "router hop": (router, False), "client-side routing": (router, True)}
        for endpoint, _ in paths.values():
            wait_ready(endpoint)
        best = {name: 0.0 for name in paths}
        for _ in range(args.rounds):
            for name, (endpoint, direct) in paths.items():
                best[name] = max(best[name], measure(endpoint, args.ops, direct))
        print(f"sync set+get, {args.ops} keys each, best of {args.rounds} (ops/s), "
              f"{'servers on CPU 1, client on CPU 0' if pin else 'unpinned'}:")
        for name, rate in best.items():
            print(f"  {name:<18} {rate:10,.0f}   {rate / best['direct']:.2f}x direct")
        ratio = best["router hop"] / best["C zmq.proxy hop"]
        print(f"router / bare proxy hop: {ratio:.2f}x  ({'PASS' if ratio >= 0.9 else 'MISS'}, goal 0.9x)")
        started = start_redis(work, pin)
        if started is None:
            print("redis-server or redis-py missing (bench/bench_node.py installs them): no Redis peer")
            return
        redis_proc, redis_port = started
        procs.append(redis_proc)
        rate = max(measure_redis(redis_port, args.ops) for _ in range(args.rounds))
        print(f"  {'redis-py to redis':<18} {rate:10,.0f}")
        for name in ("router hop", "client-side routing"):
            ratio = best[name] / rate
            print(f"native client, {name} / redis-py: {ratio:.2f}x  "
                  f"({'PASS' if ratio >= 0.6 else 'MISS'}, goal 0.6x)")
        if args.clients > 0:
            ops = max(1, args.ops // 4)
            targets = {"router hop": ("router", router), "client-side routing": ("direct", router),
                       "redis-py to redis": ("redis", redis_port)}
            rates = {name: 0.0 for name in targets}
            for _ in range(args.rounds):
                for name, target in targets.items():
                    rates[name] = max(rates[name], measure_clients(target, args.clients, ops))
            print(f"{args.clients} client processes at once, {ops} keys each, best of "
                  f"{args.rounds} (aggregate ops/s), "
                  f"{'servers on CPU 1, clients on CPU 0' if pin else 'unpinned'}:")
            for name, rate in rates.items():
                print(f"  {name:<20} {rate:10,.0f}   {rate / rates['redis-py to redis']:.2f}x redis-py")
    finally:
        for proc in procs:
            try:
                os.killpg(proc.pid, signal.SIGTERM)
                proc.wait(30)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                os.killpg(proc.pid, signal.SIGKILL)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
