#!/usr/bin/env python3
"""Benchmark a YADDB storage node (run_node.py + yaddb.Client) against redis-server + redis-py.

One run starts, for each durability pair, a fresh node and a fresh redis-server on free ports
of 127.0.0.1, each in its own temporary directory, and measures the same workloads on both:

    pair       our node          redis-server
    interval   --fsync interval  --appendonly yes --appendfsync everysec
    always     --fsync always    --appendonly yes --appendfsync always

    sync      one request at a time: N sets, then N gets in random order (per-op p50/p99)
    batched   10N keys: our mset/mget of 100 keys vs a redis-py pipeline (transaction=False)
              of 100 sets, then of 100 gets (p50/p99 per batch)
    clients   C client processes (spawned), each 4N/C sync sets then 4N/C gets of its own
              keys, at once; aggregate ops/s

Each workload runs --repeat rounds alternating ours and redis, on fresh keys; the best round
counts. Keys are the 16-byte MurmurHash3 of str(i), values 100 bytes. A bare pyzmq
DEALER/ROUTER echo (a server process with a dict behind it) shows what the transport alone
allows. By default sync and echo run with the servers on the last CPU and the client on
the others, which makes their latencies stable (--pin; see common.split_cpus).
It installs redis-server (apt-get) and redis-py (pip, the version pinned in
bench/requirements.txt) when they are missing. This is a benchmark, not a test: it reports
figures and the goals' PASS/MISS, and exits non-zero only if something failed.
"""
import argparse
import contextlib
import importlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

from common import (SPAWN, BenchError, cpu_list, cpu_seconds, free_port, interrupt_on_sigterm,
                    on_cpus, print_table, reap, set_tree_affinity, split_cpus, start_node,
                    verdict)
from foreign import ensure_redis, start_redis
from node_stores import EchoStore, OursStore, RedisStore, echo_server
from node_workloads import (BATCH, BATCH_BASE, CLIENTS_BASE, ROUND_KEYS, SYNC_BASE,
                            batched_workload, clients_workload, sync_workload)

BATCHED_FACTOR = 10           # the batched workload writes and reads 10x --ops keys
CLIENTS_FACTOR = 4            # the concurrent clients write 4x --ops keys between them
MAX_OPS = 200_000             # (the bound keeps the workloads' key ranges apart)

# our --fsync -> redis --appendfsync
PAIRS = {"interval": "everysec", "always": "always"}
# (workload, goal ratio ours/redis, what is compared)
GOALS = (("sync", 1.0, "sync set+get >= 1.0x redis-py"),
         ("batched", 1.0, "batched mset/mget >= 1.0x redis pipeline"),
         ("clients", 0.7, "{clients} clients >= 0.7x redis-py"))
# Run with the servers and the client on CPUs apart (--pin split); the others on every CPU.
PINNED_WORKLOADS = {"sync"}


def ensure_installed():
    """The project's own modules importable; redis-server and redis-py, installed if missing."""
    for module in ("zmq", "msgpack", "mmh3"):
        try:
            importlib.import_module(module)
        except ImportError:
            raise BenchError("%s does not import: run `pip install -r requirements.txt` first"
                             % module) from None
    ensure_redis()


@contextlib.contextmanager
def every_cpu(placement, pids):
    """Within it the servers `pids`, this thread and the processes it starts may run on every
    CPU: for throughput workloads, where the concurrent clients need more than one CPU and our
    node's flush and merge worker processes want a CPU of their own (pinned beside the node,
    they cut its batched writes by about a third)."""
    if placement is None:
        yield
        return
    servers, clients = placement
    for pid in pids:
        set_tree_affinity(pid, servers | clients)
    try:
        with on_cpus(servers | clients):
            yield
    finally:
        for pid in pids:
            set_tree_affinity(pid, servers)


def best_round(rounds):
    """The round with the most ops/s; the JSON keeps every round's ops/s beside it."""
    best = dict(max(rounds, key=lambda figs: figs["total"]["ops_per_s"]))
    best["rounds_ops_per_s"] = [figs["total"]["ops_per_s"] for figs in rounds]
    return best


def run_pair(fsync, n, args, placement):
    """Fresh node and redis with matching persistence; every workload on both, in rounds
    that alternate ours and redis, each round on keys of its own."""
    appendfsync = PAIRS[fsync]
    print("\n== our node --fsync %s  vs  redis-server --appendfsync %s  (N=%d, best of %d) =="
          % (fsync, appendfsync, n, args.repeat), flush=True)
    out = {"fsync": fsync, "appendfsync": appendfsync, "ops": n, "workloads": {}}
    server_cpus = placement[0] if placement else None
    with contextlib.ExitStack() as stack:
        workdir = tempfile.mkdtemp(prefix="yaddb-bench-node-")
        stack.callback(shutil.rmtree, workdir, True)
        node, node_port = start_node(workdir, "node", ["--fsync", fsync, "--log-level", "WARNING",
                                                       "master"], server_cpus)
        stack.callback(node.stop)
        red, redis_port = start_redis(workdir, appendfsync, server_cpus)
        stack.callback(red.stop)
        out["pids"] = {"ours": node.pid, "redis": red.pid}
        ours, theirs = OursStore(node_port), RedisStore(redis_port)
        stack.callback(ours.close)
        stack.callback(theirs.close)
        servers = {"ours": node, "redis": red}
        ports = {"ours": node_port, "redis": redis_port}
        per_client = max(1, CLIENTS_FACTOR * n // args.clients)
        steps = (
            ("sync", lambda s, off: sync_workload(s, n, args.max_seconds, SYNC_BASE + off)),
            ("batched", lambda s, off: batched_workload(s, BATCHED_FACTOR * n, args.max_seconds,
                                                        BATCH_BASE + off)),
            ("clients", lambda s, off: clients_workload(s.name, ports[s.name], args.clients,
                                                        per_client, args.max_seconds,
                                                        CLIENTS_BASE + off)),
        )
        try:
            run_steps(steps, ours, theirs, servers, args, placement, out)
        except Exception as exc:  # a server died or failed: say which, with its log
            if isinstance(exc, BenchError):
                raise
            logs = "".join("\n%s log (exit code %s):\n%s\n" % (srv.name, srv.returncode,
                                                                srv.log_tail())
                           for srv in servers.values())
            raise BenchError("%s: %s%s" % (type(exc).__name__, exc, logs)) from exc
        out["node_stats"] = ours.client.stats()
        ours.close()
        theirs.close()
        out["node_exit_code"] = node.stop()
        out["redis_exit_code"] = red.stop()
    return out


def run_steps(steps, ours, theirs, servers, args, placement, out):
    """Each workload in rounds, alternating ours and redis; the best round of each counts."""
    for name, run in steps:
        rounds = {"ours": [], "redis": []}
        for r in range(args.repeat):
            for store in (ours, theirs):
                print("  %-8s %-5s round %d ..." % (name, store.name, r + 1), end=" ", flush=True)
                pid = servers[store.name].pid
                with every_cpu(None if name in PINNED_WORKLOADS else placement,
                               [srv.pid for srv in servers.values()]):
                    cpu_before = cpu_seconds(pid)
                    figs = run(store, r * ROUND_KEYS)
                    cpu = cpu_seconds(pid) - cpu_before
                total = figs["total"]
                # server CPU per op, warm-up included (small against the workload)
                total["server_cpu_us_per_op"] = round(cpu / total["ops"] * 1e6, 1)
                rounds[store.name].append(figs)
                print("%10.0f ops/s" % total["ops_per_s"], flush=True)
        out["workloads"][name] = {k: best_round(v) for k, v in rounds.items()}


def run_echo(n, args, placement):
    """The pyzmq echo server with sync set/get: the transport's own ceiling."""
    print("\n== bare pyzmq DEALER/ROUTER echo, dict behind it (N=%d, best of %d) =="
          % (n, args.repeat), flush=True)
    stop = SPAWN.Event()
    port = free_port()
    proc = SPAWN.Process(target=echo_server, args=(port, stop), daemon=True)
    with on_cpus(placement[0] if placement else None):
        proc.start()
    try:
        store = EchoStore(port)
        try:
            rounds = []
            for r in range(args.repeat):
                print("  sync     echo  round %d ..." % (r + 1), end=" ", flush=True)
                rounds.append(sync_workload(store, n, args.max_seconds, SYNC_BASE + r * ROUND_KEYS))
                print("%10.0f ops/s" % rounds[-1]["total"]["ops_per_s"], flush=True)
            return best_round(rounds)
        finally:
            store.close()
    finally:
        stop.set()
        reap([proc])


def ratio(ours, theirs):
    return ours / theirs if theirs else 0.0


def lat_text(f):
    return "%.0f/%.0f" % (f["p50_us"], f["p99_us"]) if "p50_us" in f else "-"


ROWS = (("sync", "set", "sync set"), ("sync", "get", "sync get"),
        ("sync", "total", "sync set+get"),
        ("batched", "set", "batched set x%d" % BATCH),
        ("batched", "get", "batched get x%d" % BATCH),
        ("batched", "total", "batched set+get"),
        ("clients", "total", "{clients} clients set+get"))


def report_pair(pair, clients):
    print("\n-- ours --fsync %s vs redis --appendfsync %s --"
          % (pair["fsync"], pair["appendfsync"]))
    rows = [("workload", "ours ops/s", "redis ops/s", "ratio", "ours p50/p99 us",
             "redis p50/p99 us", "server CPU us/op ours/redis")]
    for workload, phase, label in ROWS:
        w = pair["workloads"].get(workload)
        if not w:
            continue
        a, b = w["ours"][phase], w["redis"][phase]
        cpu = ("%.1f/%.1f" % (a["server_cpu_us_per_op"], b["server_cpu_us_per_op"])
               if "server_cpu_us_per_op" in a else "")
        rows.append((label.format(clients=clients), "%.0f" % a["ops_per_s"],
                     "%.0f" % b["ops_per_s"], "%.2fx" % ratio(a["ops_per_s"], b["ops_per_s"]),
                     lat_text(a), lat_text(b), cpu))
    print_table(rows)
    print("(batched p50/p99 are per batch of %d keys; the %d clients' p50/p99 are per op)"
          % (BATCH, clients))


def goals(pair, clients):
    out = []
    for workload, target, text in GOALS:
        w = pair["workloads"][workload]
        r = ratio(w["ours"]["total"]["ops_per_s"], w["redis"]["total"]["ops_per_s"])
        out.append({"goal": text.format(clients=clients), "ratio": r, "target": target,
                    "fsync": pair["fsync"], "pass": r >= target})
    return out


def report_echo(echo, pairs):
    reference = next((p for p in pairs if p["fsync"] == "interval"), pairs[0] if pairs else None)
    print("\n-- transport reference: pyzmq echo (dict behind a ROUTER), sync, one at a time --")
    print_table([("", "ops/s", "p50/p99 us")]
                + [("echo " + phase, "%.0f" % echo[phase]["ops_per_s"], lat_text(echo[phase]))
                   for phase in ("set", "get", "total")])
    if reference:
        sync = reference["workloads"]["sync"]
        for phase in ("set", "get", "total"):
            e, r, o = (echo[phase]["ops_per_s"], sync["redis"][phase]["ops_per_s"],
                       sync["ours"][phase]["ops_per_s"])
            print("  %-5s echo/redis-py %.2fx   ours/echo %.2fx   (redis and ours: --fsync %s pair)"
                  % (phase, ratio(e, r), ratio(o, e), reference["fsync"]))


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--ops", type=int, default=20_000,
                   help="sync: N sets then N gets; batched: %dN keys; clients: %dN keys in all"
                        " (interval pair and echo)" % (BATCHED_FACTOR, CLIENTS_FACTOR))
    p.add_argument("--always-ops", type=int, default=0,
                   help="N for the always pair, which waits on fsync; 0 for --ops / 10")
    p.add_argument("--clients", type=int, default=8, help="concurrent client processes")
    p.add_argument("--repeat", type=int, default=2,
                   help="rounds of each workload, alternating ours and redis; the best counts")
    p.add_argument("--fsync", choices=("interval", "always", "both"), default="both",
                   help="which pairs to run: ours --fsync interval vs redis appendfsync "
                        "everysec, always vs always")
    p.add_argument("--no-echo", action="store_true", help="skip the pyzmq echo reference")
    p.add_argument("--max-seconds", type=float, default=120.0,
                   help="bound on one workload on one system")
    p.add_argument("--pin", choices=("split", "none"), default="split",
                   help="split: for sync and echo, servers on the last CPU and the client on "
                        "the others (needs 2 CPUs); none: the kernel places every process")
    p.add_argument("--json", metavar="FILE", help="also write every figure as JSON")
    args = p.parse_args(argv)
    if not args.always_ops:
        args.always_ops = max(args.clients, args.ops // 10)
    if not (0 < args.ops <= MAX_OPS and 0 < args.always_ops <= MAX_OPS):
        p.error("--ops and --always-ops must be 1 to %d" % MAX_OPS)
    if not 1 <= args.clients <= 64 or args.repeat < 1:
        p.error("--clients must be 1 to 64 and --repeat at least 1")
    return args


def main(argv=None):
    args = parse_args(argv)
    interrupt_on_sigterm()  # stop our servers on SIGTERM as on Ctrl-C
    placement = split_cpus() if args.pin == "split" else None
    if placement:
        os.sched_setaffinity(0, placement[1])  # before any thread (zmq's I/O threads) starts
    try:
        ensure_installed()
        import redis
        import zmq
        print("redis-server: %s; redis-py %s (parser: %s); pyzmq %s; Python %s; %d CPUs"
              % (subprocess.run(["redis-server", "--version"], capture_output=True, text=True,
                                timeout=10).stdout.split()[2].lstrip("v="),
                 redis.__version__,
                 "hiredis" if getattr(redis.utils, "HIREDIS_AVAILABLE", False) else "python",
                 zmq.__version__, sys.version.split()[0], os.cpu_count() or 0))
        print("placement: %s" % ("sync and echo with the servers on CPU %s and the client on "
                                 "CPU %s; batched and clients on any CPU"
                                 % (cpu_list(placement[0]), cpu_list(placement[1]))
                                 if placement else "left to the kernel (--pin none, or one CPU)"))
        fsyncs = ("interval", "always") if args.fsync == "both" else (args.fsync,)
        started = time.monotonic()
        pairs = [run_pair(f, args.ops if f == "interval" else args.always_ops, args, placement)
                 for f in fsyncs]
        echo = None if args.no_echo else run_echo(args.ops, args, placement)
    except BenchError as exc:
        print("\nbench_node: %s" % exc, file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\nbench_node: interrupted; servers stopped", file=sys.stderr)
        return 130

    for pair in pairs:
        report_pair(pair, args.clients)
        if pair["node_exit_code"] not in (0, None):
            print("NOTE: the node exited with code %s on SIGTERM" % pair["node_exit_code"])
    if echo:
        report_echo(echo, pairs)
    all_goals = [g for pair in pairs for g in goals(pair, args.clients)]
    print("\nGoals (ours / redis, ops/s):")
    for g in all_goals:
        print("  %-4s %-45s %5.2fx (goal %.1fx, --fsync %s)" % (
            verdict(g["pass"]), g["goal"], g["ratio"], g["target"], g["fsync"]))
    print("\n%.0f s in all" % (time.monotonic() - started))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"args": vars(args), "pairs": pairs, "echo": echo, "goals": all_goals},
                      f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
