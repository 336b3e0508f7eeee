"""Replication under a sustained write load: the master's write throughput with 0, 1 and 2
slaves, and how far behind a slave is (time from the master's ack to the slave serving the
write, and sequence numbers behind).

The issue's goals: p99 lag under 50 ms at half the master's peak write rate; slaves cost the
master under 15 % of its write throughput (>= 0.85x its rate with no slave).

Throughput: for 0, 1 and 2 slaves, a fresh master (and fresh slaves, all real `run_node.py
--fsync interval` processes), then --writers (4) client processes, released together, write
100-byte values for --duration (5) s as fast as they can: sync `set`s, then (another fresh
cluster) `mset`s of 100. Printed per line: writes/s, the ratio to 0 slaves, the ack latency,
the master's CPU per write, the most sequence numbers a slave was behind (sampled every 50 ms)
and how long after the last ack every slave had it all.

Lag: a fresh master and one slave; the same writers, paced open-loop (each send has a target
time; a late writer sends at once, it does not sleep after each op) to half the 0-slave sync
set peak; every --sample-every (20th) write's key and ack time go to a probe process that
polls the slave (one mget of every key it waits for, every --probe-interval-ms) and takes the
time of the reply that first shows the value. Both clocks are time.monotonic() (CLOCK_MONOTONIC,
one per machine). Printed: p50/p99/max lag, the worst moments, and the peak of master sequence
minus slave applied.

Run: python3 bench/bench_replication.py [--duration 5] [--writers 4] [--rounds 2] [--pin none]
"""
from __future__ import annotations

import argparse
import functools
import itertools
import math
import os
import sys
from typing import Iterator

from common import BenchError, cpu_list, percentiles, print_table, split_cpus, verdict
from replication_cluster import Cluster, run_benchmark
from replication_load import BATCH, SAMPLE_S, run_load

THROUGHPUT_GOAL = 0.85   # with slaves, at least this much of the 0-slave write rate
LAG_GOAL_MS = 50.0       # p99 lag at half the peak write rate
SPIKE_S = 0.010          # lags over this are listed by episode

PIN_HELP = ("none: unpinned (the kernel places everything); split: master and slaves on the "
            "last CPU, clients on the others, as in bench_router.py; master: the master alone "
            "on the last CPU, slaves and clients on the others (its own cost of serving slaves)")


def placement_for(pin: str):
    """(master CPUs, slave CPUs, client CPUs: writers, probe, this process) for --pin, or None
    for unpinned or with fewer than 2 CPUs."""
    split = split_cpus()
    if pin == "none" or split is None:
        return None
    servers, clients = split
    return (servers, servers, clients) if pin == "split" else (servers, clients, clients)


def placement_text(pin: str, placement) -> str:
    if placement is None:
        return "unpinned (the kernel places everything)"
    master, _, clients = map(cpu_list, placement)
    if pin == "split":
        return f"master and slaves on CPU {master}, clients on CPU {clients}"
    return f"master alone on CPU {master}, slaves and clients on CPU {clients}"


def loadavg() -> str:
    try:
        with open("/proc/loadavg") as file:
            return " ".join(file.read().split()[:3])
    except OSError:
        return "?"


def fmt_ms(seconds: float) -> str:
    return "-" if math.isnan(seconds) else f"{seconds * 1000:.1f}"


def at_time(at: float, t0: float) -> str:
    return "" if math.isnan(at) else f" at {at - t0:.2f} s"


def episodes(lags: list[tuple[float, float]], over: float) -> list[list[tuple[float, float]]]:
    """The (ack time, lag) samples over `over`, grouped into runs whose acks are < 0.1 s apart."""
    out: list[list[tuple[float, float]]] = []
    for acked, lag in sorted(pair for pair in lags if pair[1] > over):
        if out and acked - out[-1][-1][0] < 0.1:
            out[-1].append((acked, lag))
        else:
            out.append([(acked, lag)])
    return out


def run_on_fresh_cluster(args, work: str, placement, runs: Iterator[int], slaves: int, mode: str,
                         **load) -> dict:
    """run_load() on a cluster of its own, in a directory of its own, removed after."""
    cluster = Cluster(os.path.join(work, f"run-{next(runs)}"), slaves, placement)
    try:
        return run_load(cluster, args, mode, **load)
    finally:
        cluster.stop()


def throughput(args, fresh) -> dict:
    """{(mode, slaves): [result per round]}, rounds interleaved over the configurations."""
    results: dict = {}
    for _ in range(args.rounds):
        for mode in ("set", "mset"):
            for slaves in (0, 1, 2):
                results.setdefault((mode, slaves), []).append(fresh(slaves, mode))
    return results


def print_throughput(args, results: dict) -> list[str]:
    print(f"Write throughput: {args.writers} writer processes, {args.duration:g} s each, "
          f"{BATCH}-byte values, best of {args.rounds} (writes/s; every round in brackets):")
    rows = [("workload", "slaves", "writes/s", "vs 0", "ack p50/p99 ms", "master CPU", "slave CPU",
             "max behind", "caught up", "rounds"),
            ("", "", "", "", "", "us/write", "us/write", "(seq nos)", "after ms")]
    verdicts = []
    for mode, label in (("set", "sync set"), ("mset", f"mset of {BATCH}")):
        base = max(r["rate"] for r in results[(mode, 0)])
        for slaves in (0, 1, 2):
            runs = results[(mode, slaves)]
            best = max(runs, key=lambda r: r["rate"])
            ratio = best["rate"] / base
            slave_cpu = "/".join(f"{c:.0f}" for c in best["slave_cpu_us"]) or "-"
            if slaves:
                verdicts.append(f"{label}, {slaves} slave{'s' if slaves > 1 else ''}: {ratio:.2f}x "
                                f"{verdict(ratio >= THROUGHPUT_GOAL)}")
            rows.append((label, str(slaves), f"{best['rate']:,.0f}", f"{ratio:.2f}x",
                         f"{fmt_ms(best['ack_p50'])}/{fmt_ms(best['ack_p99'])}",
                         f"{best['master_cpu_us']:.0f}", slave_cpu,
                         str(best["peak"][0]) if slaves else "-",
                         fmt_ms(best["converged"]) if slaves else "-",
                         "[" + ", ".join(f"{r['rate']:,.0f}" for r in runs) + "]"))
    print_table(rows, align="<>>>>>>>><", indent="  ")
    for (mode, slaves), runs in sorted(results.items()):
        for number, run in enumerate(runs, 1):
            if run["notes"]:
                print(f"  note, {mode} with {slaves} slaves, round {number}: " + "; ".join(run["notes"]))
    print(f"goal, slaves cost the master under 15 % of its write rate (>= {THROUGHPUT_GOAL}x): "
          + "; ".join(verdicts))
    print("  (slaves share this machine's CPUs with the master and the writers: the ratio "
          "counts their CPU too, not only the master's work for them)")
    return [v for v in verdicts if v.endswith("MISS")]


def lag(args, fresh, peak_rate: float) -> bool:
    rate = args.rate or peak_rate / 2
    result = fresh(1, "set", rate=rate, probe=True)
    source = "--rate" if args.rate else f"half the 0-slave sync set peak of {peak_rate:,.0f}"
    print(f"Replication lag: 1 slave, {args.writers} writers paced to {rate:,.0f} sync sets/s "
          f"({source}), {args.duration:g} s:")
    late = (f"{result['late']} of {result['ops']} sends more than 1 ms behind schedule (at most "
            f"{fmt_ms(result['slip'][0])} ms{at_time(result['slip'][1], result['t0'])})"
            if result["late"] else f"none of {result['ops']} sends more than 1 ms behind schedule")
    print(f"  achieved {result['rate']:,.0f} writes/s; {late}; "
          f"ack p50/p99 {fmt_ms(result['ack_p50'])}/{fmt_ms(result['ack_p99'])} ms")
    lags = [lag for _, lag in result["lags"]]
    p50, p90, p99 = percentiles(lags, 0.5, 0.9, 0.99)
    passed = p99 < LAG_GOAL_MS / 1000
    print(f"  lag, master's ack -> slave serves the value, {len(lags)} sampled writes (every "
          f"{args.sample_every}th; the probe polled {result['polls']} times, every "
          f"{args.probe_interval_ms:g} ms when waiting, so figures are up to a poll late):")
    print(f"    p50 {fmt_ms(p50)} ms  p90 {fmt_ms(p90)} ms  "
          f"p99 {fmt_ms(p99)} ms  max {fmt_ms(max(lags, default=math.nan))} ms  "
          f"({verdict(passed)}, goal p99 < {LAG_GOAL_MS:g} ms)")
    spikes = episodes(result["lags"], SPIKE_S)
    over = sum(len(spike) for spike in spikes)
    if spikes:
        worst = sorted(sorted(spikes, key=lambda spike: -max(lag for _, lag in spike))[:6],
                       key=lambda spike: spike[0][0])
        print(f"    {over} sampled writes over {SPIKE_S * 1000:g} ms, in {len(spikes)} episode(s); "
              f"the worst: " + ", ".join(
                  f"{fmt_ms(max(lag for _, lag in spike))} ms at {spike[0][0] - result['t0']:.2f} s"
                  f" ({len(spike)})" for spike in worst))
    else:
        print(f"    no sampled write over {SPIKE_S * 1000:g} ms")
    if result["unseen"]:
        print(f"    {result['unseen']} sampled writes never seen on the slave (probe gave up)")
    peak, at, (low, high) = result["peak"]
    print(f"  sequence numbers behind (master sequence - slave applied, every {SAMPLE_S * 1000:g} ms): "
          f"peak {peak} (between {low} and {high}){at_time(at, result['t0'])}, median "
          f"{result['median_behind']:.0f}")
    print(f"  for comparison, the lag the nodes' stats report, peak: master slaves[].lag "
          f"{result['reported_peaks'][0]} (the slave reports its position every 0.5 s), slave "
          f"replication.lag {result['reported_peaks'][1]} (counts only what it has received)")
    print(f"  slave had everything {fmt_ms(result['converged'])} ms after the last ack; "
          f"CPU per write: master {result['master_cpu_us']:.0f} us, slave "
          f"{result['slave_cpu_us'][0]:.0f} us")
    if result["notes"]:
        print("  note: " + "; ".join(result["notes"]))
    if result["unseen"]:
        raise BenchError(f"{result['unseen']} acknowledged writes never became visible on the slave")
    return passed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=5.0, help="seconds of writing per run")
    parser.add_argument("--writers", type=int, default=4, help="writer processes")
    parser.add_argument("--rounds", type=int, default=2,
                        help="throughput runs per configuration (interleaved; best counts)")
    parser.add_argument("--rate", type=float, default=0.0,
                        help="writes/s for the lag run (default: half the 0-slave sync set peak)")
    parser.add_argument("--sample-every", type=int, default=20, help="probe every Nth write")
    parser.add_argument("--probe-interval-ms", type=float, default=1.0,
                        help="pause between the probe's polls while it waits for a key")
    parser.add_argument("--warmup-keys", type=int, default=50_000,
                        help="keys written to each fresh cluster before it is measured, so every "
                             "node has started its flush and merge workers (0: measure from cold)")
    parser.add_argument("--only", choices=["all", "throughput", "lag"], default="all",
                        help="lag alone still measures the 0-slave peak first, unless --rate")
    parser.add_argument("--pin", choices=["master", "none", "split"], default="none", help=PIN_HELP)
    args = parser.parse_args()
    placement = placement_for(args.pin)
    if args.pin != "none":
        if placement is None:
            parser.error("--pin needs 2 CPUs")
        os.sched_setaffinity(0, placement[2])  # writers and probe inherit it

    def body(work: str) -> int:
        fresh = functools.partial(run_on_fresh_cluster, args, work, placement, itertools.count(1))
        misses: list[str] = []
        print(f"load average at start: {loadavg()}; {os.cpu_count()} CPUs; "
              f"{placement_text(args.pin, placement)}; "
              f"nodes --fsync interval; each fresh cluster "
              + (f"warmed up with {args.warmup_keys:,} keys" if args.warmup_keys else "measured cold"))
        peak = 0.0
        if args.only in ("all", "throughput"):
            results = throughput(args, fresh)
            misses += print_throughput(args, results)
            peak = max(r["rate"] for r in results[("set", 0)])
        if args.only in ("all", "lag"):
            if not peak and not args.rate:
                peak = fresh(0, "set")["rate"]
            if not lag(args, fresh, peak):
                misses.append("lag")
        print(f"load average at end: {loadavg()}; goals missed: {len(misses)}")
        return 0
    return run_benchmark("yaddb-replication-bench-", body)

if __name__ == "__main__":
    sys.exit(main())
