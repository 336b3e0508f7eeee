"""What a write concern costs: a master with one slave, writes with w=1 against w=majority.

Each configuration runs on a fresh cluster (real `run_node.py` master and slave, --fsync
interval unless --fsync says otherwise: `--fsync always` is the nodes' default, so what a user
meets; interval shows replication's own cost best; warmed up as in bench_replication.py), rounds interleaved: --writers processes
writing for --duration seconds, sync `set`s or `mset`s of 100, with the write concern given.
With one slave, majority is both members: each write waits for the slave's ack. Printed:
writes/s (best round), the ratio to w=1 on the same workload, ack latency, and the goals of
issue 10 (w=majority >= 0.7x of w=1 for sync sets, >= 0.8x for msets).
"""
from __future__ import annotations

import argparse
import itertools
import os
import sys

from common import print_table, verdict
from replication_cluster import Cluster, run_benchmark
from replication_load import BATCH, run_load

GOALS = {"set": 0.7, "mset": 0.8}  # w=majority against w=1
LABELS = {"set": "sync set", "mset": f"mset of {BATCH}"}


def measure(args, work: str) -> dict:
    """{(mode, w): [result per round]}, each on a fresh cluster, rounds interleaved."""
    runs = itertools.count(1)
    results: dict = {}
    for _ in range(args.rounds):
        for mode in ("set", "mset"):
            for w in (1, "majority"):
                cluster = Cluster(os.path.join(work, f"run-{next(runs)}"), 1, None, args.fsync)
                try:
                    results.setdefault((mode, w), []).append(run_load(cluster, args, mode, w=w))
                finally:
                    cluster.stop()
    return results


def report(args, results: dict) -> list[str]:
    print(f"Write concern, master and 1 slave (--fsync {args.fsync}): {args.writers} writer processes, {args.duration:g} s "
          f"each, best of {args.rounds} (writes/s; every round in brackets):")
    rows = [("workload", "w", "writes/s", "vs w=1", "ack p50/p99 ms", "rounds")]
    lines = []
    for mode in ("set", "mset"):
        base = max(r["rate"] for r in results[(mode, 1)])
        for w in (1, "majority"):
            runs = results[(mode, w)]
            best = max(runs, key=lambda r: r["rate"])
            ratio = best["rate"] / base
            rows.append((LABELS[mode], str(w), f"{best['rate']:,.0f}", f"{ratio:.2f}x",
                         f"{best['ack_p50'] * 1000:.1f}/{best['ack_p99'] * 1000:.1f}",
                         "[" + ", ".join(f"{r['rate']:,.0f}" for r in runs) + "]"))
            if w != 1:
                lines.append(f"{verdict(ratio >= GOALS[mode])} {LABELS[mode]}: w=majority "
                             f"{ratio:.2f}x of w=1 (goal {GOALS[mode]}x)")
        for run in runs:
            if run["notes"]:
                print(f"  note, {mode}: " + "; ".join(run["notes"]))
    print_table(rows, indent="  ")
    for line in lines:
        print(line)
    return [line for line in lines if line.startswith("MISS")]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=5.0, help="seconds of writing per run")
    parser.add_argument("--writers", type=int, default=4, help="writer processes")
    parser.add_argument("--rounds", type=int, default=2, help="runs per configuration")
    parser.add_argument("--fsync", default="interval", choices=("always", "interval", "never"),
                        help="the nodes' --fsync (always is their default)")
    parser.add_argument("--warmup-keys", type=int, default=50_000,
                        help="keys written to each fresh cluster before it is measured")
    args = parser.parse_args()
    args.sample_every = 1 << 30  # run_load's probe settings: no probe here
    args.probe_interval_ms = 1.0

    def body(work: str) -> int:
        misses = report(args, measure(args, work))
        print(f"goals missed: {len(misses)}")
        return 0
    return run_benchmark("yaddb-write-concern-bench-", body)


if __name__ == "__main__":
    sys.exit(main())
