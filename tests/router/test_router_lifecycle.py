"""CONTRACT.md section 2 on real processes: Ctrl-C (SIGINT) or SIGTERM to the router stops every
process the one-command cluster started within 2 s, each flushing its data; a SIGKILLed router
leaves no node running 3 s later; either way a restart on the same --data-dir has every
acknowledged key. Times run from the signal (time.monotonic) to the last process gone, counting
the router, its nodes and their workers; anything still running is killed afterwards. A client
writes all the while, so flushes are under way when the signal comes."""
from __future__ import annotations

import signal
import threading
import time
from collections import Counter

import pytest

from yaddb import Client
from yaddb.errors import YaddbError
from tests import proc_table
from tests.helpers import Processes, RouterProcess, wait_for
from tests.proc_table import Proc

STOP_S = 2.0          # contract: SIGINT/SIGTERM to every started process gone
ORPHAN_S = 3.0        # contract: the router's SIGKILL to every node gone
WATCH_S = 30.0        # how long a late stop is watched, to say how late, before it is killed
KEYS = 200
VALUE_BYTES = 24 << 10  # 100 keys of this overflow a node's 1 MiB memtable: flushes, so workers


def kind(cmdline: str) -> str:
    for pattern, name in (("run_router.py", "router"), ("-m yaddb.node", "node"),
                          ("yaddb.lsm.workerd", "worker")):
        if pattern in cmdline:
            return name
    return cmdline


def cluster_processes(router: RouterProcess) -> dict[Proc, str]:
    """The router, its nodes and their workers as the process table shows them now: its
    descendants, and whatever carries its tag (also once orphaned)."""
    found = {p: proc_table.cmdline(p.pid) for p in proc_table.descendants(router.pid)}
    found.update(router.leftovers())  # the router itself, and any orphan
    return {p: line for p, line in found.items() if kind(line) in ("router", "node", "worker")}


def start_cluster(processes: Processes, data, *args: str) -> RouterProcess:
    router = processes.router(data, *args)
    router.wait_ready()
    assert len(router.node_pids()) == 4  # 2 partitions, a master and a slave each
    return router


def write_keys(router: RouterProcess) -> dict[bytes, bytes]:
    """KEYS acknowledged writes through the native client: key -> value."""
    written = {}
    with Client(router.endpoint, timeout=10) as client:
        for i in range(KEYS):
            value = b"%03d:" % i + bytes([i % 251]) * VALUE_BYTES
            written[client.set(b"life%03d" % i, value)] = value
    return written


class Writer(threading.Thread):
    """Writes big values through its own client until stopped or refused; `acked` holds what
    was acknowledged."""

    LIMIT = 3000

    def __init__(self, endpoint: str) -> None:
        super().__init__(name="writer", daemon=True)
        self.endpoint = endpoint
        self.acked: dict[bytes, bytes] = {}
        self.stopping = threading.Event()
        self.error: YaddbError | None = None

    def run(self) -> None:
        try:
            with Client(self.endpoint, timeout=2) as client:
                for i in range(self.LIMIT):
                    if self.stopping.is_set():
                        return
                    value = b"more%05d:" % i + bytes([i % 251]) * VALUE_BYTES
                    self.acked[client.set(b"more%05d" % i, value)] = value
        except YaddbError as exc:  # the cluster going away; what was acknowledged must stay
            self.error = exc

    def finish(self) -> dict[bytes, bytes]:
        self.stopping.set()
        self.join(60)
        assert not self.is_alive(), "the writer hung"
        return self.acked


def writing(router: RouterProcess) -> Writer:
    writer = Writer(router.endpoint)
    writer.start()
    wait_for(lambda: len(writer.acked) >= 60 or not writer.is_alive(), "writes under way")
    assert len(writer.acked) >= 60, f"the writer stopped early: {writer.error}"
    return writer


def every_node_with_a_worker(router: RouterProcess) -> dict[Proc, str]:
    """Wait until each of the 4 nodes has a storage worker (they start at the first flush);
    then all the cluster's processes."""
    def ready():
        found = cluster_processes(router)
        nodes = {p.pid for p, line in found.items() if kind(line) == "node"}
        parents = {proc_table.parent_of(p.pid) for p, line in found.items() if kind(line) == "worker"}
        return found if len(nodes) == 4 and nodes <= parents else None
    return wait_for(ready, "every node to have started a storage worker")


def watch_until_gone(router: RouterProcess, before: dict[Proc, str], started: float):
    """Seconds from `started` until none of `before` (nor any process started under the
    router's tag meanwhile) runs; None if some still run after WATCH_S. And those last seen."""
    watched, scanned = dict(before), 0.0
    while True:
        if time.monotonic() - scanned > 0.1:  # a scan of /proc costs more than a look at each
            watched.update(router.leftovers())
            scanned = time.monotonic()
        running = {p: line for p, line in watched.items() if proc_table.alive(p)}
        elapsed = time.monotonic() - started
        if not running and not router.leftovers():  # none started since the last scan either
            return elapsed, {}
        if elapsed > WATCH_S:
            return None, running
        time.sleep(0.005)


def logs_with_data(data) -> dict[str, int]:
    """Bytes left in each write-ahead log under the data dir: a node that stopped cleanly has
    flushed its memtable, leaving nothing to replay."""
    return {str(path.relative_to(data)): path.stat().st_size for path in data.rglob("wal-*")
            if path.stat().st_size}


def assert_every_key_after_a_restart(processes: Processes, data, written: dict) -> None:
    router = start_cluster(processes, data)  # new ports, same data
    with Client(router.endpoint, timeout=10) as client:
        missing = [key for key, value in written.items()
                   if getattr(client.get(key), "value", None) != value]
    assert not missing, f"{len(missing)} of {len(written)} acknowledged keys lost: {missing[:3]}"


def describe(processes: dict[Proc, str]) -> str:
    return "; ".join(f"{kind(line)} pid {p.pid}" for p, line in sorted(processes.items()))


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_a_stop_signal_to_the_router_stops_every_process_within_2_s(tmp_path, processes, signum):
    data = tmp_path / "data"
    router = start_cluster(processes, data)
    written = write_keys(router)
    before = every_node_with_a_worker(router)
    counts = Counter(kind(line) for line in before.values())
    assert counts["router"] == 1 and counts["node"] == 4 and counts["worker"] >= 4, counts
    writer = writing(router)

    started = time.monotonic()
    router.child.proc.send_signal(signum)  # the router process only, as a terminal's Ctrl-C
    gone_after, still_running = watch_until_gone(router, before, started)
    written.update(writer.finish())
    router.kill()  # whatever is left (nothing, if the contract holds)
    code = router.child.returncode
    unflushed = logs_with_data(data)
    assert_every_key_after_a_restart(processes, data, written)

    assert still_running == {}, (
        f"{describe(still_running)} still ran {WATCH_S:g} s after {signum.name} (now killed)")
    assert gone_after <= STOP_S, (
        f"the {len(before)} processes ({dict(counts)}) took {gone_after:.2f} s to stop after "
        f"{signum.name}; the contract says {STOP_S:g} s")
    assert code == 0, f"the router exited with {code} after {signum.name}:\n{router.log()[-3000:]}"
    assert unflushed == {}, f"nodes stopped without flushing their memtables: {unflushed}"


def test_a_killed_router_leaves_no_node_running_after_3_s(tmp_path, processes):
    data = tmp_path / "data"
    router = start_cluster(processes, data)
    written = write_keys(router)
    before = every_node_with_a_worker(router)
    nodes = {p: line for p, line in before.items() if kind(line) != "router"}
    writer = writing(router)

    started = time.monotonic()
    router.child.proc.send_signal(signal.SIGKILL)  # the router only: its nodes must notice
    assert router.child.wait(10) == -signal.SIGKILL
    gone_after, still_running = watch_until_gone(router, nodes, started)
    written.update(writer.finish())
    router.kill()  # kills the orphans it recorded, if any are left
    assert not {p for p in before if proc_table.alive(p)}, "RouterProcess.kill() left processes"
    unflushed = logs_with_data(data)
    assert_every_key_after_a_restart(processes, data, written)

    assert still_running == {}, (
        f"{describe(still_running)} still ran {WATCH_S:g} s after the router was killed "
        f"(orphans, now killed)")
    assert gone_after <= ORPHAN_S, (
        f"the router's {len(nodes)} nodes and workers took {gone_after:.2f} s to stop after it "
        f"was killed; the contract says {ORPHAN_S:g} s")
    assert unflushed == {}, f"orphaned nodes stopped without flushing their memtables: {unflushed}"


def test_the_test_helpers_kill_leaves_no_process_of_the_cluster(tmp_path, processes):
    """RouterProcess.kill(), teardown's last resort: the router is frozen, its nodes recorded,
    it is killed, then they are; nothing is left when kill() returns."""
    router = start_cluster(processes, tmp_path / "data")
    before = cluster_processes(router)
    assert Counter(kind(line) for line in before.values())["node"] == 4
    assert router.kill() == -signal.SIGKILL
    assert not [p.pid for p in before if proc_table.alive(p)]
    assert router.leftovers() == {}
