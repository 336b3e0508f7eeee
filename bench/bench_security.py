"""The cost of CURVE (issue 11): the same cluster with and without keys, in one run, as ratios.

Each variant is a fresh master and one slave (`run_node.py --fsync FSYNC`, `always` by default
as users run them) and `run_router.py --nodes MASTER`, real processes on free ports of
127.0.0.1 in a temporary directory; the curve variant adds `--keys-dir DIR` (made once by
`python3 -m yaddb keygen DIR`) to all three and changes nothing else. Rounds interleave
(plain, curve, plain, curve, ...), each on fresh processes warmed up as in
bench_replication.py; medians count. Per round, for --seconds each:

- sync: one `Client(router, keys=DIR)` in this process (direct routing, the default; against
  the plain cluster the same client speaks plain), one set then one get per iteration;
  ops/s. Goal: curve >= 0.85x plain.
- batches: the same client, mset of 100 then mget of 100 (batches go through the router);
  keys/s. Goal: >= 0.8x each.
- peak: --writers processes writing sync sets to the master as fast as they can
  (bench_replication's load), for the lag run's rate and as a figure of its own.
- lag: the writers paced to half the peak just measured on the same cluster (so a variant is
  never paced past what the machine gives it at that moment; other work on this VM moves the
  peak by up to 4x from one round to the next), bench_replication's probe on the slave: p99
  from the master's ack to the slave serving the write. Goal with CURVE: p99 < 50 ms.

Run: python3 bench/bench_security.py [--seconds 5] [--rounds 3] [--fsync always]  (about 3 min)
"""
from __future__ import annotations

import argparse
import copy
import os
import re
import statistics
import sys
import time
from typing import Callable, Optional

from bench_replication import LAG_GOAL_MS, loadavg
from common import (LOCALHOST, BenchError, Child, percentiles, print_table, run_to_end,
                    start_router, stop_all, verdict)
from replication_cluster import VALUE, WARMUP_MERGE_KEYS, Cluster, run_benchmark, signals_held, warm_up
from replication_load import BATCH, run_load

SYNC_GOAL, BATCH_GOAL = 0.85, 0.8
VARIANTS = ("plain", "curve")
# A log line worth a look: anything above INFO, and tracebacks.
ODD_LINE = re.compile(r"WARNING|ERROR|CRITICAL|Traceback|refused", re.IGNORECASE)


def make_keys(work: str) -> str:
    """The cluster's keys, made as a user makes them: python3 -m yaddb keygen DIR."""
    keys = os.path.join(work, "keys")
    code, output = run_to_end("keygen", [sys.executable, "-m", "yaddb", "keygen", keys], work,
                              ours=True, timeout=60)
    if code != 0:
        raise BenchError(f"python3 -m yaddb keygen failed ({code}):\n{output}")
    return keys


def rate_for(seconds: float, step: Callable[[int], int]) -> float:
    """Call step(0), step(1), ... for `seconds`; what the steps returned (ops, keys), per second."""
    done, i = 0, 0
    started = time.perf_counter()
    end = started + seconds
    while time.perf_counter() < end:
        done += step(i)
        i += 1
    return done / (time.perf_counter() - started)


def measure_client(router_port: int, keys: str, seconds: float) -> dict[str, float]:
    """Sync set+get ops/s, mset and mget keys/s of one direct-routing client."""
    from yaddb import Client  # here, as common.client_to does: ZeroMQ loads on first use
    client = Client(f"tcp://{LOCALHOST}:{router_port}", timeout=5.0, keys=keys)
    try:
        client.ping()
        client.get(b"s-warm")  # fetch the partition map and connect to the master, untimed

        def sync(i: int) -> int:
            client.set(b"s-%09d" % i, VALUE)
            if client.get(b"s-%09d" % i) is None:
                raise BenchError(f"key s-{i:09d} missing right after its set")
            return 2
        written, missed = [0], [0]

        def mset(i: int) -> int:
            client.mset([(b"m-%09d" % (i * BATCH + n), VALUE) for n in range(BATCH)])
            written[0] = i + 1
            return BATCH

        def mget(i: int) -> int:  # over the batches mset wrote, round and round
            first = (i % max(1, written[0])) * BATCH
            items = client.mget([b"m-%09d" % (first + n) for n in range(BATCH)])
            # Reads through the router may go to the slave, a moment behind: a miss is noted,
            # not fatal (the copies are checked after the lag run).
            missed[0] += sum(item is None for item in items)
            return BATCH
        out = {"sync": rate_for(seconds, sync), "mset": rate_for(seconds, mset),
               "mget": rate_for(seconds, mget)}
        out["notes"] = [f"mget found {missed[0]} keys missing"] if missed[0] else []
        return out
    finally:
        client.close()


def odd_things(cluster: Cluster, router: Child) -> list[str]:
    """What a round left that is worth a look: refusals the nodes counted (stats "refused")
    and warning or error lines in the logs (timestamps cut, so repeats collapse). Expect
    handshake refusals with keys: each keyed Client on loopback also tries a plain connection
    (yaddb.transport.curve.speaks_curve), which a keyed node refuses and counts."""
    notes = []
    for node in cluster.nodes:
        with node.client(timeout=5.0) as client:
            refused = client.stats().get("refused")
        if refused:
            notes.append(f"{node.name} stats refused: {refused}")
    for child in [node.child for node in cluster.nodes] + [router]:
        try:
            with open(child.log_path, errors="replace") as log:
                lines = [re.sub(r"^[\d\-:,. T]+", "", line.strip()) for line in log
                         if ODD_LINE.search(line)]
        except OSError:
            continue
        seen: dict[str, list[str]] = {}  # lines that differ only in numbers count as one
        for line in lines:
            seen.setdefault(re.sub(r"\d+", "N", line), []).append(line)
        notes += [f"{child.name}.log ({len(same)}x): {same[0][:200]}" for same in seen.values()]
    return notes


def one_round(args, work: str, variant: str, keys: Optional[str]) -> dict:
    """Fresh master, slave and router of `variant` (keys: its --keys-dir, None for plain);
    every figure of one round, and its notes."""
    cluster = Cluster(work, 1, None, args.fsync, keys)
    router: Optional[Child] = None
    try:
        with signals_held():  # a started router is always recorded for the stop below
            router, router_port, _ = start_router(
                cluster.work, ["--nodes", f"{LOCALHOST}:{cluster.master.port}", "--data-dir",
                               os.path.join(cluster.work, "router"),
                               *(["--keys-dir", keys] if keys else [])])
        if args.warmup_keys:
            warm_up(cluster, args.warmup_keys)
        # The client always gets the keys: against the plain cluster it then speaks plain, so
        # both variants run the same client code, as a user's would.
        out = measure_client(router_port, keys or args.keys, args.seconds)
        load = copy.copy(args)
        load.duration, load.warmup_keys = args.seconds, 0  # warmed up above, once
        out["peak"] = run_load(cluster, load, "set")["rate"]
        out["lag_asked"] = args.rate or out["peak"] / 2
        lag = run_load(cluster, load, "set", rate=out["lag_asked"], probe=True)
        if lag["unseen"]:
            raise BenchError(f"{variant}: {lag['unseen']} acknowledged writes never became "
                             f"visible on the slave")
        out["lag_p99"] = percentiles([pair[1] for pair in lag["lags"]], 0.99)[0]
        out["lag_rate"], out["lag_samples"] = lag["rate"], len(lag["lags"])
        out["notes"] += lag["notes"] + odd_things(cluster, router)
        return out
    finally:
        with signals_held():
            if router is not None:
                stop_all([router])
            cluster.stop()


def report(args, results: dict[str, list[dict]]) -> list[str]:
    """Print the table and the verdicts; returns the goals missed."""
    def median(variant: str, key: str) -> float:
        return statistics.median(r[key] for r in results[variant])

    def rounds(variant: str, key: str, scale: float = 1.0) -> str:
        return ", ".join(f"{r[key] * scale:,.0f}" if scale == 1 else f"{r[key] * scale:.1f}"
                         for r in results[variant])
    def paired(key: str) -> float:
        """The median of each round's curve/plain: rounds run back to back, so a pair shares
        the VM's mood of the moment, which moves single figures by up to 4x here."""
        return statistics.median(c[key] / p[key] for p, c in zip(results["plain"], results["curve"]))
    rows = [("measure", "plain", "curve", "of medians", "paired", "goal", "",
             "rounds plain | curve")]
    misses = []
    for key, label, goal in (("sync", "sync set+get, ops/s", SYNC_GOAL),
                             ("mset", f"mset of {BATCH}, keys/s", BATCH_GOAL),
                             ("mget", f"mget of {BATCH}, keys/s", BATCH_GOAL),
                             ("peak", f"peak sync sets/s, {args.writers} writers", None)):
        ratio = paired(key)
        passed = goal is None or ratio >= goal
        if not passed:
            misses.append(label)
        rows.append((label, f"{median('plain', key):,.0f}", f"{median('curve', key):,.0f}",
                     f"{median('curve', key) / median('plain', key):.2f}x", f"{ratio:.2f}x",
                     f">= {goal}x" if goal else "-", verdict(passed) if goal else "",
                     f"{rounds('plain', key)} | {rounds('curve', key)}"))
    p99 = {variant: median(variant, "lag_p99") * 1000 for variant in VARIANTS}
    passed = p99["curve"] < LAG_GOAL_MS
    if not passed:
        misses.append("lag")
    rows.append(("lag p99 ms, half peak", f"{p99['plain']:.1f}", f"{p99['curve']:.1f}",
                 f"{p99['curve'] / p99['plain']:.2f}x" if p99["plain"] else "-", "",
                 f"curve < {LAG_GOAL_MS:g}", verdict(passed),
                 f"{rounds('plain', 'lag_p99', 1000)} | {rounds('curve', 'lag_p99', 1000)}"))
    print(f"CURVE against plain, master + 1 slave + router, --fsync {args.fsync}, {args.seconds:g} s "
          f"per measure, {args.rounds} interleaved rounds (goals judged on the paired ratio):")
    print_table(rows, align="<>>>>><<", indent="  ")
    samples = [r["lag_samples"] for variant in VARIANTS for r in results[variant]]
    achieved = [r["lag_rate"] for variant in VARIANTS for r in results[variant]]
    asked = {variant: ", ".join(f"{r['lag_asked']:,.0f}" for r in results[variant])
             for variant in VARIANTS}
    print(f"  lag: paced to {asked['plain']} | {asked['curve']} sets/s, achieved "
          f"{min(achieved):,.0f} to {max(achieved):,.0f}; {min(samples)} to {max(samples)} "
          f"sampled writes per run (every {args.sample_every}th)")
    for variant in VARIANTS:  # each kind of note once per variant, with the rounds it came in
        kinds: dict[str, tuple[str, list[int]]] = {}
        for number, result in enumerate(results[variant], 1):
            for note in result["notes"]:
                kinds.setdefault(re.sub(r"\d+", "N", note), (note, []))[1].append(number)
        for note, numbers in kinds.values():
            print(f"  note, {variant} round {','.join(map(str, numbers))}: {note}")
    return misses


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0, help="seconds per measure per round")
    parser.add_argument("--rounds", type=int, default=3, help="rounds per variant (interleaved)")
    parser.add_argument("--fsync", default="always", choices=("always", "interval", "never"),
                        help="every node's --fsync, the same for both variants")
    parser.add_argument("--writers", type=int, default=4, help="writer processes for peak and lag")
    parser.add_argument("--rate", type=float, default=0.0,
                        help="sets/s for every lag run (default: half the peak just measured)")
    parser.add_argument("--sample-every", type=int, default=5, help="lag: probe every Nth write")
    parser.add_argument("--probe-interval-ms", type=float, default=1.0,
                        help="lag: pause between the probe's polls while it waits")
    parser.add_argument("--warmup-keys", type=int, default=WARMUP_MERGE_KEYS,
                        help="keys written to each fresh cluster first, so its nodes have "
                             "flushed and merged once (0: none)")
    args = parser.parse_args()
    if args.rounds < 1 or args.seconds <= 0:
        parser.error("--rounds and --seconds must be positive")

    def body(work: str) -> int:
        args.keys = make_keys(work)
        print(f"load average at start: {loadavg()}; {os.cpu_count()} CPUs, unpinned", flush=True)
        started = time.monotonic()
        results: dict[str, list[dict]] = {variant: [] for variant in VARIANTS}
        for n in range(1, args.rounds + 1):
            for variant in VARIANTS:
                result = one_round(args, os.path.join(work, f"{variant}-{n}"), variant,
                                   args.keys if variant == "curve" else None)
                results[variant].append(result)
                print(f"round {n} {variant}: sync {result['sync']:,.0f} ops/s, mset "
                      f"{result['mset']:,.0f} and mget {result['mget']:,.0f} keys/s, peak "
                      f"{result['peak']:,.0f} sets/s, lag p99 {result['lag_p99'] * 1000:.1f} ms",
                      flush=True)
        misses = report(args, results)
        print(f"load average at end: {loadavg()}; {time.monotonic() - started:.0f} s; "
              f"goals missed: {len(misses)}" + (f" ({', '.join(misses)})" if misses else ""))
        return 0
    return run_benchmark("yaddb-security-bench-", body)


if __name__ == "__main__":
    sys.exit(main())
