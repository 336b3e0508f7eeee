#!/usr/bin/env python3
"""A node's CPU per request, of two trees side by side: ping, get and set (fsync never).

    git worktree add /tmp/yaddb-before <commit>
    python3 bench/bench_node_cpu.py --before /tmp/yaddb-before [--rounds 4] [--seconds 2]

One `run_node.py` master from each tree, each with a client of this tree doing one request at
a time; rounds alternate which tree goes first. The figure is the node process's CPU (user +
system, from /proc, its ZeroMQ I/O thread included) divided by the requests served, which
the machine's phases move far less than the rate. Prints the medians and the paired rate
ratios after/before. A benchmark, not a test.
"""
import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO_ROOT)

from yaddb.client import Client  # noqa: E402
from yaddb.supervisor import free_port  # noqa: E402


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def start_node(tree: str, data_dir: str) -> tuple[subprocess.Popen, Client]:
    port = free_port()
    proc = subprocess.Popen([sys.executable, "run_node.py", "-p", str(port), "--pub-port",
                             str(free_port()), "--data-dir", data_dir, "--fsync", "never",
                             "master"], cwd=tree, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    client = Client(f"tcp://127.0.0.1:{port}", direct=False, timeout=10)
    deadline = time.monotonic() + 30
    while True:
        try:
            client.ping()
            return proc, client
        except Exception:
            if time.monotonic() > deadline or proc.poll() is not None:
                raise SystemExit(f"the node of {tree} did not start")
            time.sleep(0.1)


def measure(pid: int, request, seconds: float) -> tuple[float, float]:
    """(requests/s, node CPU us per request) over `seconds`, after a warm-up."""
    for _ in range(500):
        request()
    cpu, started, done = cpu_seconds(pid), time.perf_counter(), 0
    while time.perf_counter() < started + seconds:
        for _ in range(100):
            request()
        done += 100
    elapsed = time.perf_counter() - started
    return done / elapsed, 1e6 * (cpu_seconds(pid) - cpu) / done


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", required=True, help="the other tree (a worktree)")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=2.0)
    args = parser.parse_args()
    work = tempfile.mkdtemp(prefix="yaddb-node-cpu-")
    nodes = {}
    try:
        for name, tree in (("before", args.before), ("after", REPO_ROOT)):
            nodes[name] = start_node(tree, os.path.join(work, name))
            nodes[name][1].set(b"k", b"v" * 100)
        results: dict = {}
        for round_no in range(args.rounds):
            for name in (("before", "after") if round_no % 2 == 0 else ("after", "before")):
                proc, client = nodes[name]
                for op, request in (("ping", client.ping), ("get", lambda: client.get(b"k")),
                                    ("set", lambda: client.set(b"k", b"v" * 100))):
                    results.setdefault((op, name), []).append(measure(proc.pid, request,
                                                                      args.seconds))
        for op in ("ping", "get", "set"):
            before, after = results[(op, "before")], results[(op, "after")]
            ratios = ", ".join(f"{a[0] / b[0]:.2f}" for a, b in zip(after, before))
            print(f"{op}: node CPU per request {statistics.median(b[1] for b in before):.1f} -> "
                  f"{statistics.median(a[1] for a in after):.1f} us; requests/s "
                  f"{statistics.median(b[0] for b in before):,.0f} -> "
                  f"{statistics.median(a[0] for a in after):,.0f} (paired ratios {ratios})")
    finally:
        for proc, client in nodes.values():
            client.close()
            proc.terminate()
            proc.wait(30)
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
