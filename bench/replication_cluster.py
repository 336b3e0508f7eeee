"""bench_replication's cluster: a master and its slaves, real run_node.py processes, with what
the benchmark asks of them before and after a load (warm-up, convergence, the copies'
check), and the signal handling that keeps a node start or a cleanup from being cut short."""
from __future__ import annotations

import contextlib
import functools
import os
import shutil
import signal
import sys
import tempfile
import time
from dataclasses import dataclass
from typing import Callable, Optional

from common import (LOCALHOST, BenchError, Child, client_to, start_node, stop_all,
                    wait_ready)

VALUE = b"v" * 100
WARMUP_MERGE_KEYS = 30_000  # enough 100-byte values for three 1 MiB memtables: a first merge
CONVERGE_TIMEOUT_S = 60.0


class Interrupts:
    """Ctrl-C and SIGTERM raise KeyboardInterrupt in the main thread, except inside `held()`,
    which they wait for: a child is never started without being recorded for the cleanup,
    and a cleanup is never cut short. (Deferred here rather than by blocking the signals: a
    blocked mask would be inherited by the nodes, and another thread could take the signal.)"""

    def __init__(self) -> None:
        self.depth = 0
        self.pending = False

    def install(self) -> None:
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, self._handler)

    def _handler(self, signum, frame) -> None:
        if self.depth:
            self.pending = True
        else:
            raise KeyboardInterrupt

    @contextlib.contextmanager
    def held(self):
        self.depth += 1
        try:
            yield
        finally:
            self.depth -= 1
            if not self.depth and self.pending:
                self.pending = False
                raise KeyboardInterrupt


INTERRUPTS = Interrupts()
signals_held = INTERRUPTS.held


def run_benchmark(prefix: str, body: Callable[[str], int]) -> int:
    """body(scratch directory) with Ctrl-C and SIGTERM handled: the exit code, 1 after a
    BenchError, 130 when interrupted; the scratch directory is removed in every case."""
    INTERRUPTS.install()
    work = tempfile.mkdtemp(prefix=prefix)
    try:
        return body(work)
    except BenchError as exc:
        print(f"FAILED: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted; stopping every process", file=sys.stderr)
        return 130
    finally:
        with signals_held():
            shutil.rmtree(work, ignore_errors=True)


@dataclass
class Node:
    """One node of a Cluster: its process, its request port and its CURVE keys' folder (None:
    plain)."""
    child: Child
    port: int
    keys: Optional[str] = None

    @property
    def name(self) -> str:
        return self.child.name

    def client(self, timeout: float):
        """A yaddb.Client to this node alone (no partition map)."""
        return client_to(self.port, timeout=timeout, direct=False, keys=self.keys)


class Cluster:
    """A master and `slaves` slaves, each `run_node.py --fsync FSYNC` (interval unless
    given) in its own session, data in `work`. `placement`: (master CPUs, slave CPUs, client
    CPUs), or None. `keys`: a folder of CURVE keys, given to every node as --keys-dir and used
    by every client of the benchmark's (None: plain)."""

    def __init__(self, work: str, slaves: int, placement, fsync: str = "interval",
                 keys: Optional[str] = None) -> None:
        self.work = work
        self.keys = keys
        self.master: Optional[Node] = None
        self.slaves: list[Node] = []
        master_cpus, slave_cpus = placement[:2] if placement else (None, None)
        os.makedirs(work)
        try:
            with signals_held():
                self.master = Node(*start_node(work, "master", ["--fsync", fsync, "master"],
                                               master_cpus, keys), keys)
            for n in range(slaves):
                with signals_held():
                    self.slaves.append(Node(*start_node(
                        work, f"slave-{n + 1}",
                        ["--fsync", fsync, "slave", "--master-host", LOCALHOST,
                         "--master-port", str(self.master.port)], slave_cpus, keys), keys))
            for slave in self.slaves:
                wait_ready(slave.child, functools.partial(replication_ready, slave),
                           what="become ready (stats replication.ready)")
        except BaseException:
            self.stop()
            raise

    @property
    def nodes(self) -> list[Node]:
        return [*([self.master] if self.master else []), *self.slaves]

    def stop(self) -> None:
        """Every node stopped (cleanly; killed after 15 s), then the data removed. Ctrl-C
        waits until this is done."""
        with signals_held():
            stop_all([node.child for node in reversed(self.nodes)])
            self.slaves, self.master = [], None
            shutil.rmtree(self.work, ignore_errors=True)


def replication_ready(slave: Node) -> bool:
    with slave.client(timeout=1.0) as client:
        return client.stats()["replication"]["ready"]


def warm_up(cluster: Cluster, keys: int) -> None:
    """Write `keys` keys by mset of 1000 and wait for every node to have flushed and merged
    once and every slave to have them all: a fresh node starts its flush and merge worker
    processes at its first flush and merge (an import costing a few hundred ms of CPU, on
    master and slaves at the same moment), which is not the steady state being measured."""
    with cluster.master.client(timeout=10.0) as master:
        for first in range(0, keys, 1000):
            master.mset([(b"warm-%09d" % n, VALUE) for n in range(first, min(keys, first + 1000))])
        seq = master.stats()["sequence"]
    deadline = time.monotonic() + CONVERGE_TIMEOUT_S
    for node in cluster.nodes:
        with node.client(timeout=5.0) as client:
            while True:
                stats = client.stats()
                if stats["flushes"] >= 1 and (stats["compactions"] >= 1 or keys < WARMUP_MERGE_KEYS) \
                        and stats.get("replication", {"applied": seq})["applied"] >= seq:
                    break
                if time.monotonic() > deadline:
                    raise BenchError(f"{node.name} did not flush, merge and catch up with the "
                                     f"{keys}-key warm-up within {CONVERGE_TIMEOUT_S:g} s: {stats}")
                time.sleep(0.05)
    time.sleep(0.5)  # let the merges finish


def converge(cluster: Cluster, stopped: float) -> tuple[float, int]:
    """Seconds from the last ack until every slave applied the master's last write (the
    writers have stopped, so the master's sequence is final); and that sequence."""
    with cluster.master.client(timeout=5.0) as master:
        seq = master.stats()["sequence"]
    if not cluster.slaves:
        return 0.0, seq
    clients = [slave.client(timeout=5.0) for slave in cluster.slaves]
    try:
        behind = list(range(len(clients)))
        while behind:
            behind = [n for n in behind if clients[n].stats()["replication"]["applied"] < seq]
            now = time.monotonic()
            if behind and now - stopped > CONVERGE_TIMEOUT_S:
                states = "; ".join(f"{cluster.slaves[n].name}: {clients[n].stats()['replication']}"
                                   for n in behind)
                raise BenchError(f"slaves did not reach master sequence {seq} within "
                                 f"{CONVERGE_TIMEOUT_S:g} s of the last write: {states}")
            if behind:
                time.sleep(0.002)
        return max(0.0, now - stopped), seq
    finally:
        for client in clients:
            client.close()


def check_copies(cluster: Cluster, done: list, seq: int) -> list[str]:
    """Each writer's last key is on every slave, and each slave's applied is the master's.
    Returns what was unusual: a slave that saw gaps, caught up again or started over."""
    keys = [message[4] for message in done if message[4] is not None]
    notes = []
    for slave in cluster.slaves:
        with slave.client(timeout=5.0) as client:
            state = client.stats()["replication"]
            applied = state["applied"]
            items = client.mget(keys)
        # at the start: one session, one full sync (of an empty master) and one catch-up
        if state["gaps"] or state["sessions"] > 1 or state["full_syncs"] > 1 or state["catch_ups"] > 1:
            notes.append(f"{slave.name}: " + ", ".join(
                f"{state[name]} {name}" for name in ("gaps", "catch_ups", "full_syncs", "sessions")))
        if applied != seq:
            raise BenchError(f"{slave.name} applied {applied}, the master is at {seq}")
        missing = [key for key, item in zip(keys, items) if item is None or item.value != VALUE]
        if missing:
            raise BenchError(f"{slave.name} lacks keys the master acknowledged: {missing[:5]}")
    return notes
