"""Automatic failover under load: SIGKILL the master, time until writes work again.

One partition: a master and --slaves slaves (run_node.py, --fsync always) behind `run_router.py
--nodes MASTER --failover-after S --node-timeout 0.5`. A writer thread writes unique keys
(w=--w, no pause but --pause-ms after an error) and a reader thread reads acknowledged ones,
each with its own Client to the router. Each cycle SIGKILLs the master named by the router's
/stats and takes (a) the failover time: kill to the first write sent after it acknowledged
(/stats must then name a new master), (b) reads failed (errors) and reads that found nothing,
(c) writes refused (errors), both from the kill to the end of the cycle. The killed node is
restarted on its data by its own command once a write is acknowledged (at most --restart-after
s after the promotion: w=all, or majority of two, needs it), and the cycle ends when /stats
shows it a ready slave of the new master. At the end every acknowledged key is read from the
master: missing w=1 writes are counted (and those in DATA_DIR/rollback files); a missing w>1
write fails the run.

    python3 bench/bench_failover.py --cycles 10                  # about 90 s
    python3 bench/bench_failover.py --cycles 10 --w majority     # about 2 minutes
    python3 bench/bench_failover.py --slaves 2 --w majority --keep-logs /tmp/failover-logs

Goals, PASS/MISS (exit 0 either way): failover p50 <= 4 s, max <= 6 s, no read failed during a
failover. Exit 1 on a harness error (a node not starting, no failover within 30 s, no rejoin
within 60 s) or a lost w>1 write; 130 on Ctrl-C or SIGTERM. Every process is stopped in any case.
"""
from __future__ import annotations

import argparse
import glob
import json
import os
import random
import shutil
import sys
import threading
import time

from common import (LOCALHOST, REPO_ROOT, BenchError, answers_ping, client_to, free_port, launch,
                    percentiles, print_table, start_router, stop_all, verdict, wait_ready)
from replication_cluster import run_benchmark, signals_held
from yaddb.errors import YaddbError

VALUE = b"v" * 100
GOAL_P50_S, GOAL_MAX_S = 4.0, 6.0
FAILOVER_DEADLINE_S, REJOIN_DEADLINE_S = 30.0, 60.0


class Node:
    """One run_node.py on fixed ports, so a restart on its data is the same command."""

    def __init__(self, work: str, name: str, fsync: str, role: list) -> None:
        self.work, self.name, self.port, self.child = work, name, free_port(), None
        self.data_dir, self.address = os.path.join(work, name), f"{LOCALHOST}:{self.port}"
        self.argv = [sys.executable, os.path.join(REPO_ROOT, "run_node.py"), "-p", str(self.port),
                     "--pub-port", str(free_port()), "--data-dir", self.data_dir, "--fsync", fsync,
                     *role]

    def start(self) -> None:
        with signals_held():  # never a child unrecorded for the cleanup
            if self.child is None:
                self.child = launch(self.name, self.argv, self.work)
            else:
                self.child.start()  # the same command, ports and data; its log appended to
        wait_ready(self.child, answers_ping(self.port))


class Load:
    """The writer and the reader threads, and what they saw, each event with its time."""

    def __init__(self, port: int, w, timeout: float, pause: float) -> None:
        self.port, self.w, self.timeout, self.pause = port, w, timeout, pause
        self.acked: list = []        # (key, sent, acknowledged), in order of acknowledgement
        self.refused: list = []      # (when the error came, error kind)
        self.read_errors: list = []  # (when the error came, "Kind: message")
        self.not_found: list = []    # (when the read started, key)
        self.failures: list = []     # what ended a thread
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=self._guarded, args=(f,), daemon=True)
                        for f in (self._write, self._read)]
        for thread in self.threads:
            thread.start()

    def _guarded(self, body) -> None:
        try:
            body()
        except BaseException as exc:  # noqa: BLE001 -- said by the main thread
            self.failures.append(f"{body.__name__}: {type(exc).__name__}: {exc}")
            self.stop.set()

    def _write(self) -> None:
        with client_to(self.port, timeout=self.timeout) as client:
            n = 0
            while not self.stop.is_set():
                key, sent, n = b"fo-%010d" % n, time.monotonic(), n + 1
                try:
                    client.set(key, VALUE, w=self.w)
                    self.acked.append((key, sent, time.monotonic()))
                except YaddbError as exc:
                    self.refused.append((time.monotonic(), type(exc).__name__))
                    self.stop.wait(self.pause)

    def _read(self) -> None:
        with client_to(self.port, timeout=self.timeout) as client:
            while not self.stop.is_set():
                if not self.acked:
                    self.stop.wait(0.01)
                    continue
                key, started = random.choice(self.acked)[0], time.monotonic()
                try:
                    item = client.get(key)
                except YaddbError as exc:
                    self.read_errors.append((time.monotonic(), f"{type(exc).__name__}: {exc}"))
                    self.stop.wait(self.pause)
                    continue
                if item is None:
                    self.not_found.append((started, key))
                elif item.value != VALUE:
                    raise BenchError(f"read {key!r}: a value never written: {item.value[:40]!r}")

    def end(self) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(3 * self.timeout + 5)


def wait_until(what: str, condition, timeout: float, router, must: bool = True) -> float:
    """The time condition() first held (polled every 20 ms; an error means not yet); after
    `timeout` s, BenchError (or with must=False, the time then)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if condition():
                return time.monotonic()
        except YaddbError:
            pass
        time.sleep(0.02)
    if not must:
        return time.monotonic()
    raise BenchError(f"no {what} within {timeout:g} s; the router's log ends:\n{router.log_tail()}")


def run_cycle(nodes: dict, router, stats, load: Load, args) -> dict:
    before = stats()
    victim, start = nodes[before["master"]], len(load.acked)
    killed_at = time.monotonic()
    victim.child.kill()
    promoted = wait_until("promotion", lambda: stats()["master"] != victim.address,
                          FAILOVER_DEADLINE_S, router)
    first_ack = lambda: next((acked for _, sent, acked in load.acked[start:]  # noqa: E731
                              if sent > killed_at), None)
    # restarted once a write is acknowledged, at most restart_after s after the promotion
    wait_until("ack", first_ack, max(0.0, promoted + args.restart_after - time.monotonic()),
               router, must=False)
    victim.start()
    wait_until("write acknowledged after the kill", first_ack, FAILOVER_DEADLINE_S, router)
    after = stats()
    if after["master"] == victim.address or after["epoch"] <= before["epoch"]:
        raise BenchError(f"a write was acknowledged after the kill, but /stats says {after}")
    master = after["master"]
    rejoined = wait_until(f"rejoin of {victim.name} as a ready slave of {master}", lambda: any(
        s["address"] == victim.address and s["ready"] and s["master"] == master
        for s in stats()["slaves"]), REJOIN_DEADLINE_S, router)
    window = lambda events: [e for e in events if killed_at <= e[0] <= rejoined]  # noqa: E731
    refused = [kind for _, kind in window(load.refused)]
    return {"killed": victim.name, "new": nodes[master].name, "promoted": promoted - killed_at,
            "failover": first_ack() - killed_at, "rejoin": rejoined - killed_at,
            "refused": {kind: refused.count(kind) for kind in refused},
            "read_errors": window(load.read_errors),
            "not_found": [key for _, key in window(load.not_found)]}


def final_check(nodes: dict, master: str, load: Load) -> tuple[list, set]:
    """(acknowledged keys missing on the master, every key in the rollback files)."""
    keys, missing = [key for key, _, _ in load.acked], []
    with client_to(nodes[master].port, timeout=10.0, direct=False) as client:
        for first in range(0, len(keys), 500):
            chunk = keys[first:first + 500]
            missing += [k for k, item in zip(chunk, client.mget(chunk)) if item is None]
    rolled = set()
    for node in nodes.values():
        for path in glob.glob(os.path.join(node.data_dir, "rollback", "*.jsonl")):
            with open(path, encoding="utf-8") as file:
                rolled.update(bytes.fromhex(json.loads(line)["key"])
                              for line in file if line.strip())
    return missing, rolled


def report(args, cycles: list, load: Load, missing: list, rolled: set) -> int:
    print(f"Failover: 1 partition, master + {args.slaves} slave(s), router --failover-after "
          f"{args.failover_after:g} --node-timeout 0.5; writer w={args.w}, reader, client timeout "
          f"{args.client_timeout:g} s, {args.pause_ms:g} ms pause after a failed call")
    gone = set(missing)
    rows = [("cycle", "killed", "new master", "promoted s", "failover s", "rejoined s",
             "writes refused", "reads failed", "found nothing (lost keys)")]
    for n, c in enumerate(cycles, 1):
        rows.append((str(n), c["killed"], c["new"], f"{c['promoted']:.2f}", f"{c['failover']:.2f}",
                     f"{c['rejoin']:.2f}", ", ".join(f"{v} {k}" for k, v in sorted(
                         c["refused"].items())) or "0", str(len(c["read_errors"])),
                     f"{len(c['not_found'])} ({sum(key in gone for key in c['not_found'])})"))
    print_table(rows, align="<<<>>>>>>", indent="  ")
    times = [c["failover"] for c in cycles]
    p50, top = percentiles(times, 0.5)[0], max(times)
    failed = [text for c in cycles for _, text in c["read_errors"]]
    for text in sorted(set(failed))[:8]:
        print(f"  read error: {text}")
    print(f"reads failed outside the failovers: {len(load.read_errors) - len(failed)}; "
          f"acknowledged writes: {len(load.acked)}; rollback files hold {len(rolled)} keys")
    if args.w == 1:
        print(f"acknowledged w=1 writes missing at the end: {len(missing)} ({len(gone & rolled)} "
              f"in rollback files, {len(gone - rolled)} nowhere)")
    else:
        print(f"acknowledged w={args.w} writes missing at the end: {len(missing)}"
              + (f" LOST: {missing[:5]}" if missing else " (all readable)"))
        if args.slaves == 1 or args.w == "all":
            print(f"  note: w={args.w} needs the killed node: no write is acknowledged until it is "
                  f"back (restarted {args.restart_after:g} s after the promotion, --restart-after)")
    print(f"{verdict(p50 <= GOAL_P50_S)} failover p50 {p50:.2f} s (goal <= {GOAL_P50_S:g} s); "
          f"each cycle: {', '.join(f'{t:.2f}' for t in times)}")
    print(f"{verdict(top <= GOAL_MAX_S)} failover max {top:.2f} s (goal <= {GOAL_MAX_S:g} s)")
    print(f"{verdict(not failed)} reads failed during failover: {len(failed)} (goal 0)")
    return 1 if missing and args.w != 1 else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add = parser.add_argument
    add("--cycles", type=int, default=10, help="masters killed, one per cycle")
    add("--slaves", type=int, default=1, help="slaves of the one partition")
    add("--failover-after", type=float, default=3.0, help="run_router.py's flag")
    add("--w", default="1", help="the writer's write concern: 1, N, majority or all")
    add("--fsync", default="always", choices=("always", "interval", "never"), help="the nodes'")
    add("--client-timeout", type=float, default=2.0, help="the writer's and reader's Client")
    add("--pause-ms", type=float, default=50.0, help="pause after a failed write or read")
    add("--restart-after", type=float, default=3.0, help="restart the killed node this long "
        "after the promotion if no write was acknowledged before")
    add("--steady", type=float, default=2.0, help="seconds of load before each kill")
    add("--keep-logs", metavar="DIR", help="copy the processes' logs here at the end")
    args = parser.parse_args()
    args.w = int(args.w) if args.w.isdigit() else args.w

    def body(work: str) -> int:
        nodes, children, load = {}, [], None
        try:
            master = Node(work, "node-0", args.fsync, ["master"])
            for n in range(args.slaves + 1):
                node = Node(work, f"node-{n}", args.fsync, ["slave", "--master-host", LOCALHOST,
                            "--master-port", str(master.port)]) if n else master
                nodes[node.address] = node
                node.start()
            with signals_held():
                children.append(start_router(work, [
                    "--nodes", master.address, "--failover-after", str(args.failover_after),
                    "--node-timeout", "0.5", "--data-dir", os.path.join(work, "router-data")]))
            router, zmq_port, _ = children[0]
            with client_to(zmq_port, timeout=2.0) as client:
                stats = lambda: client.stats()["partitions"][0]  # noqa: E731
                wait_until("ready slaves", lambda: sum(bool(s["ready"]) for s in stats()["slaves"])
                           == args.slaves, REJOIN_DEADLINE_S, router)
                load, cycles = Load(zmq_port, args.w, args.client_timeout, args.pause_ms / 1000), []
                for n in range(args.cycles):
                    load.stop.wait(args.steady)
                    if load.failures:
                        raise BenchError("; ".join(load.failures))
                    cycles.append(run_cycle(nodes, router, stats, load, args))
                    print(f"cycle {n + 1}: {cycles[-1]['killed']} -> {cycles[-1]['new']}, "
                          f"failover {cycles[-1]['failover']:.2f} s", file=sys.stderr)
                load.end()
                if load.failures:
                    raise BenchError("; ".join(load.failures))
                missing, rolled = final_check(nodes, stats()["master"], load)
            return report(args, cycles, load, missing, rolled)
        finally:
            if load is not None:
                load.end()
            with signals_held():
                stop_all([c[0] for c in children] + [n.child for n in nodes.values() if n.child])
                for path in glob.glob(os.path.join(work, "*.log")) if args.keep_logs else ():
                    os.makedirs(args.keep_logs, exist_ok=True)
                    shutil.copy(path, args.keep_logs)
    return run_benchmark("yaddb-failover-bench-", body)


if __name__ == "__main__":
    sys.exit(main())
