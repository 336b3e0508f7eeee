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
import contextlib
import math
import multiprocessing
import os
import queue
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from yaddb import Client  # noqa: E402
from yaddb.errors import YaddbError  # noqa: E402

VALUE = b"v" * 100
BATCH = 100
THROUGHPUT_GOAL = 0.85   # with slaves, at least this much of the 0-slave write rate
LAG_GOAL_MS = 50.0       # p99 lag at half the peak write rate
SAMPLE_S = 0.05          # how often the sampler asks master and slaves where they are
SPIKE_S = 0.010          # lags over this are listed by episode
WARMUP_MERGE_KEYS = 30_000  # enough 100-byte values for three 1 MiB memtables: a first merge
READY_TIMEOUT_S = 60.0
CONVERGE_TIMEOUT_S = 60.0

# --pin: which CPUs the master, the slaves and the clients (writers, probe, this process) get.
PLACEMENTS = {
    "none": None,
    "split": ({1}, {1}, {0}),    # servers on CPU 1, clients on CPU 0, as in bench_router.py
    "master": ({1}, {0}, {0}),   # the master alone on CPU 1: its own cost of serving slaves
}
PLACEMENT_TEXT = {
    "none": "unpinned (the kernel places everything)",
    "split": "master and slaves on CPU 1, clients on CPU 0",
    "master": "master alone on CPU 1, slaves and clients on CPU 0",
}


class Failure(Exception):
    """Something went wrong (not a missed goal): the run exits non-zero."""


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


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a process (all its threads, not its worker children)."""
    try:
        with open(f"/proc/{pid}/stat") as file:
            fields = file.read().rpartition(")")[2].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return math.nan


def loadavg() -> str:
    try:
        with open("/proc/loadavg") as file:
            return " ".join(file.read().split()[:3])
    except OSError:
        return "?"


def percentile(values: list, q: float) -> float:
    """Nearest rank; nan for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[max(0, min(len(ordered) - 1, math.ceil(q * len(ordered)) - 1))]


# -- the cluster ---------------------------------------------------------------------------------

class Node:
    def __init__(self, proc: subprocess.Popen, port: int, name: str, log_path: str) -> None:
        self.proc, self.port, self.name, self.log_path = proc, port, name, log_path
        self.endpoint = f"tcp://127.0.0.1:{port}"

    def log_tail(self, lines: int = 20) -> str:
        try:
            with open(self.log_path, errors="replace") as file:
                return "".join(file.readlines()[-lines:])
        except OSError:
            return "(no log)"

    def check_running(self) -> None:
        if self.proc.poll() is not None:
            raise Failure(f"{self.name} exited with {self.proc.returncode}:\n{self.log_tail()}")


class Cluster:
    """A master and `slaves` slaves, real processes each in its own session, data in `work`."""

    def __init__(self, work: str, slaves: int, placement) -> None:
        self.work = work
        self.placement = placement
        self.master: Node | None = None
        self.slaves: list[Node] = []
        os.makedirs(work)
        try:
            port = free_port()
            with signals_held():
                self.master = self._start("master", port, ["master"], 0)
            self._wait_answering(self.master)
            for n in range(slaves):
                with signals_held():
                    self.slaves.append(self._start(
                        f"slave-{n + 1}", free_port(),
                        ["slave", "--master-host", "127.0.0.1", "--master-port", str(port)], 1))
            for slave in self.slaves:
                self._wait_answering(slave)
                self._wait_replicating(slave)
        except BaseException:
            self.stop()
            raise

    def _start(self, name: str, port: int, role: list[str], kind: int) -> Node:
        log_path = os.path.join(self.work, name + ".log")
        prefix = []
        if self.placement is not None:
            prefix = ["taskset", "-c", ",".join(map(str, sorted(self.placement[kind])))]
        env = {k: v for k, v in os.environ.items() if not k.startswith("YADDB_")}
        env["PYTHONPATH"] = ROOT
        with open(log_path, "wb") as log:
            proc = subprocess.Popen(
                [*prefix, sys.executable, os.path.join(ROOT, "run_node.py"), "-p", str(port),
                 "--pub-port", str(free_port()), "--data-dir", os.path.join(self.work, name),
                 "--fsync", "interval", *role],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env,
                cwd=self.work, start_new_session=True)
        return Node(proc, port, name, log_path)

    @staticmethod
    def _wait_until(node: Node, ready, what: str, pause: float = 0.0) -> None:
        """Until ready(client) is true of a Client to `node`; Failure naming `what` if never."""
        deadline = time.monotonic() + READY_TIMEOUT_S
        with Client(node.endpoint, timeout=1.0, direct=False) as client:
            while time.monotonic() < deadline:
                node.check_running()
                try:
                    if ready(client):
                        return
                except YaddbError:
                    pass
                time.sleep(pause)
        raise Failure(f"{node.name} {what} within {READY_TIMEOUT_S:g} s:\n{node.log_tail()}")

    @classmethod
    def _wait_answering(cls, node: Node) -> None:
        cls._wait_until(node, lambda client: client.ping(), "did not answer a ping")

    @classmethod
    def _wait_replicating(cls, node: Node) -> None:
        cls._wait_until(node, lambda client: client.stats()["replication"]["ready"],
                        "never became ready (stats replication.ready)", pause=0.02)

    def stop(self) -> None:
        """SIGTERM to every node's process group (each stops cleanly), SIGKILL after 15 s;
        then the data goes. Ctrl-C waits until this is done."""
        with signals_held():
            nodes = [*self.slaves, *([self.master] if self.master else [])]
            for node in nodes:
                _signal_group(node.proc, signal.SIGTERM)
            for node in nodes:
                try:
                    node.proc.wait(15)
                except subprocess.TimeoutExpired:
                    _signal_group(node.proc, signal.SIGKILL)
                    node.proc.wait()
                # its flush and merge workers share the group: none may be left
                _signal_group(node.proc, signal.SIGKILL)
            self.slaves, self.master = [], None
            shutil.rmtree(self.work, ignore_errors=True)


def _signal_group(proc: subprocess.Popen, signum: int) -> None:
    try:
        os.killpg(proc.pid, signum)
    except ProcessLookupError:
        pass


# -- client processes ----------------------------------------------------------------------------

def writer_process(endpoint: str, wid: int, writers: int, mode: str, duration: float,
                   rate: float, sample_every: int, results, samples, start, go) -> None:
    """One writer: `set`s (mode "set") or `mset`s of BATCH (mode "mset") of its own keys from
    start.value for `duration` s; closed loop when rate is 0, else paced open loop at
    rate / writers, shifted by wid / rate so the writers interleave. Every `sample_every`-th
    write's (key, ack time) goes to `samples` (None: no sampling). Puts its figures on
    `results`."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent stops us
    try:
        client = Client(endpoint, timeout=10.0, direct=False)
        client.ping()
        results.put(("ready", wid))
        go.wait(60)
        t0 = start.value
        end = t0 + duration
        delay = t0 - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        latencies, written, i, slip_max, slip_at, late = [], 0, 0, 0.0, math.nan, 0
        interval = writers / rate if rate else 0.0
        offset = wid / rate if rate else 0.0
        last_key, acked = None, t0
        while True:
            if rate:
                target = t0 + offset + i * interval
                if target >= end:
                    break
                now = time.monotonic()
                if target > now:
                    time.sleep(target - now)
                elif now - target > 0.001:
                    late += 1
                    if now - target > slip_max:
                        slip_max, slip_at = now - target, target
            elif time.monotonic() >= end:
                break
            sent = time.monotonic()
            if mode == "set":
                last_key = b"w%d-%09d" % (wid, i)
                client.set(last_key, VALUE)
                written += 1
            else:
                keys = [b"w%d-%09d" % (wid, i * BATCH + n) for n in range(BATCH)]
                client.mset([(key, VALUE) for key in keys])
                last_key = keys[-1]
                written += BATCH
            acked = time.monotonic()
            latencies.append(acked - sent)
            if samples is not None and (i + wid) % sample_every == 0:
                samples.put((last_key, acked))
            i += 1
        client.close()
        results.put(("done", wid, written, acked, last_key, latencies, late,
                     (slip_max, slip_at)))
    except BaseException as exc:  # the parent reports it
        results.put(("error", wid, f"{type(exc).__name__}: {exc}"))


def probe_process(endpoint: str, samples, results, interval: float) -> None:
    """Wait for (key, ack time) pairs; poll the slave with one mget of every key still unseen,
    every `interval` s, and record (ack, lag) when a reply first has the key. None ends it."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        client = Client(endpoint, timeout=5.0, direct=False)
        client.ping()
        results.put(("ready", "probe"))
        pending: dict[bytes, float] = {}
        lags: list[tuple[float, float]] = []
        polls, finishing, give_up = 0, False, math.inf
        while True:
            try:  # block for work only when nothing waits
                item = samples.get(timeout=0.5) if not pending else samples.get_nowait()
                while True:
                    if item is None:
                        finishing, give_up = True, time.monotonic() + CONVERGE_TIMEOUT_S
                    else:
                        pending[item[0]] = item[1]
                    item = samples.get_nowait()
            except queue.Empty:
                pass
            if finishing and (not pending or time.monotonic() > give_up):
                break
            if not pending:
                continue
            keys = list(pending)
            items = client.mget(keys)
            seen = time.monotonic()
            polls += 1
            for key, item in zip(keys, items):
                if item is not None:
                    acked = pending.pop(key)
                    lags.append((acked, seen - acked))
            time.sleep(interval)
        client.close()
        results.put(("probe", lags, len(pending), polls))
    except BaseException as exc:
        results.put(("error", "probe", f"{type(exc).__name__}: {exc}"))


class Sampler(threading.Thread):
    """Every SAMPLE_S: the master's sequence, each slave's applied, the master's sequence
    again (and its slaves' lag as the slaves last reported it, every 0.5 s). How far a slave
    was behind lies between first sequence - applied and second sequence - applied; the
    midpoint counts, and the bounds are kept."""

    def __init__(self, cluster: Cluster) -> None:
        super().__init__(daemon=True, name="sampler")
        self.cluster = cluster
        self.stopping = threading.Event()
        # (time, behind per slave (midpoint), (low, high) of the worst slave, the master's
        # stats slaves[].lag (max), the slaves' own stats replication.lag (max))
        self.samples: list[tuple[float, list[int], tuple[int, int], int, int]] = []
        self.error: str | None = None

    def run(self) -> None:
        master = Client(self.cluster.master.endpoint, timeout=5.0, direct=False)
        slaves = [Client(slave.endpoint, timeout=5.0, direct=False) for slave in self.cluster.slaves]
        try:
            while not self.stopping.wait(SAMPLE_S):
                before = master.stats()["sequence"]
                states = [client.stats()["replication"] for client in slaves]
                applied = [state["applied"] for state in states]
                stats = master.stats()
                after = stats["sequence"]
                reported = max([slave["lag"] for slave in stats["slaves"]] or [0])
                self.samples.append((time.monotonic(), [round((before + after) / 2) - a for a in applied],
                                     (max(0, before - min(applied)), after - min(applied)), reported,
                                     max(state["lag"] for state in states)))
        except YaddbError as exc:
            self.error = f"{type(exc).__name__}: {exc}"
        finally:
            master.close()
            for client in slaves:
                client.close()

    def finish(self) -> None:
        self.stopping.set()
        self.join(10)

    def peak(self) -> tuple[int, float, tuple[int, int]]:
        """The most sequence numbers any slave was behind, when (monotonic), and its bounds."""
        best = (0, math.nan, (0, 0))
        for at, behind, bounds, _, _ in self.samples:
            if behind and max(behind) > best[0]:
                best = (max(behind), at, bounds)
        return best

    def median(self) -> float:
        return percentile([max(behind) for _, behind, _, _, _ in self.samples if behind], 0.5)

    def reported_peaks(self) -> tuple[int, int]:
        """The peaks of the lag the master's stats and the slaves' own stats report."""
        return (max([sample[3] for sample in self.samples] or [0]),
                max([sample[4] for sample in self.samples] or [0]))


def run_load(cluster: Cluster, args, mode: str, rate: float = 0.0, probe: bool = False) -> dict:
    """--writers processes against the cluster's master (and the probe on its first slave):
    start them, release them together, collect their figures, wait for the slaves to converge."""
    ctx = multiprocessing.get_context("spawn")  # no ZeroMQ context inherited by fork
    results, start, go = ctx.Queue(), ctx.Value("d", 0.0), ctx.Event()
    samples = ctx.Queue() if probe else None
    procs = [ctx.Process(target=writer_process, daemon=True,
                         args=(cluster.master.endpoint, wid, args.writers, mode, args.duration,
                               rate, args.sample_every, results, samples, start, go))
             for wid in range(args.writers)]
    if probe:
        procs.append(ctx.Process(target=probe_process, daemon=True,
                                 args=(cluster.slaves[0].endpoint, samples, results,
                                       args.probe_interval_ms / 1000)))
    sampler = Sampler(cluster) if cluster.slaves else None
    try:
        if args.warmup_keys:
            warm_up(cluster, args.warmup_keys)
        for proc in procs:
            with signals_held():  # a started child always gets killed below
                proc.start()
        ready = 0
        while ready < len(procs):
            message = results.get(timeout=60)
            if message[0] == "error":
                raise Failure(f"{message[1]} failed to start: {message[2]}")
            ready += 1
        t0 = start.value = time.monotonic() + 0.05
        go.set()
        if sampler is not None:
            sampler.start()
        while time.monotonic() < t0:
            time.sleep(0.001)
        cpu0 = [cpu_seconds(node.proc.pid) for node in (cluster.master, *cluster.slaves)]
        done = []
        while len(done) < args.writers:
            message = results.get(timeout=args.duration + 120)
            if message[0] == "error":
                raise Failure(f"writer {message[1]} failed: {message[2]}")
            done.append(message)
        stopped = max(message[3] for message in done)  # the last ack
        master_cpu = cpu_seconds(cluster.master.proc.pid) - cpu0[0]
        if probe:
            samples.put(None)
        converged, seq = converge(cluster, stopped)
        slave_cpu = [cpu_seconds(node.proc.pid) - c for node, c in zip(cluster.slaves, cpu0[1:])]
        out = {}
        if probe:
            message = results.get(timeout=CONVERGE_TIMEOUT_S + 30)
            if message[0] == "error":
                raise Failure(f"the probe failed: {message[2]}")
            _, out["lags"], out["unseen"], out["polls"] = message
        if sampler is not None:
            sampler.finish()
            if sampler.error:
                raise Failure(f"sampling stats failed: {sampler.error}")
        for proc in procs:
            proc.join(10)
        notes = check_copies(cluster, done, seq)
        written = sum(message[2] for message in done)
        latencies = [lat for message in done for lat in message[5]]
        out.update({
            "t0": t0, "writes": written, "rate": written / (stopped - t0),
            "ack_p50": percentile(latencies, 0.5), "ack_p99": percentile(latencies, 0.99),
            "late": sum(message[6] for message in done),
            "ops": sum(len(message[5]) for message in done),
            "slip": max((message[7] for message in done), key=lambda pair: pair[0]),
            "master_cpu_us": master_cpu / written * 1e6,
            "slave_cpu_us": [cpu / written * 1e6 for cpu in slave_cpu],
            "converged": converged, "seq": seq, "notes": notes,
            "peak": sampler.peak() if sampler else (0, math.nan, (0, 0)),
            "median_behind": sampler.median() if sampler else math.nan,
            "reported_peaks": sampler.reported_peaks() if sampler else (0, 0),
        })
        return out
    except queue.Empty:
        raise Failure("a writer or the probe went silent (no message within its timeout)") from None
    finally:
        if sampler is not None and sampler.is_alive():
            sampler.finish()
        with signals_held():
            stop_children(procs)


def warm_up(cluster: Cluster, keys: int) -> None:
    """Write `keys` keys by mset of 1000 and wait for every node to have flushed and merged
    once and every slave to have them all: a fresh node starts its flush and merge worker
    processes at its first flush and merge (an import costing a few hundred ms of CPU, on
    master and slaves at the same moment), which is not the steady state being measured."""
    with Client(cluster.master.endpoint, timeout=10.0, direct=False) as master:
        for first in range(0, keys, 1000):
            master.mset([(b"warm-%09d" % n, VALUE) for n in range(first, min(keys, first + 1000))])
        seq = master.stats()["sequence"]
    deadline = time.monotonic() + CONVERGE_TIMEOUT_S
    for node in (cluster.master, *cluster.slaves):
        with Client(node.endpoint, timeout=5.0, direct=False) as client:
            while True:
                stats = client.stats()
                if stats["flushes"] >= 1 and (stats["compactions"] >= 1 or keys < WARMUP_MERGE_KEYS) \
                        and stats.get("replication", {"applied": seq})["applied"] >= seq:
                    break
                if time.monotonic() > deadline:
                    raise Failure(f"{node.name} did not flush, merge and catch up with the "
                                  f"{keys}-key warm-up within {CONVERGE_TIMEOUT_S:g} s: {stats}")
                time.sleep(0.05)
    time.sleep(0.5)  # let the merges finish


def stop_children(procs: list) -> None:
    """Writers and probe still running (an error or Ctrl-C) are killed; the rest joined."""
    for proc in procs:
        if proc.pid is None:  # never started
            continue
        if proc.is_alive():
            proc.kill()
        proc.join(5)


def converge(cluster: Cluster, stopped: float) -> tuple[float, int]:
    """Seconds from the last ack until every slave applied the master's last write (the
    writers have stopped, so the master's sequence is final); and that sequence."""
    with Client(cluster.master.endpoint, timeout=5.0, direct=False) as master:
        seq = master.stats()["sequence"]
    if not cluster.slaves:
        return 0.0, seq
    clients = [Client(slave.endpoint, timeout=5.0, direct=False) for slave in cluster.slaves]
    try:
        behind = list(range(len(clients)))
        while behind:
            behind = [n for n in behind if clients[n].stats()["replication"]["applied"] < seq]
            now = time.monotonic()
            if behind and now - stopped > CONVERGE_TIMEOUT_S:
                states = "; ".join(f"{cluster.slaves[n].name}: {clients[n].stats()['replication']}"
                                   for n in behind)
                raise Failure(f"slaves did not reach master sequence {seq} within "
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
        with Client(slave.endpoint, timeout=5.0, direct=False) as client:
            state = client.stats()["replication"]
            applied = state["applied"]
            items = client.mget(keys)
        # at the start: one session, one full sync (of an empty master) and one catch-up
        if state["gaps"] or state["sessions"] > 1 or state["full_syncs"] > 1 or state["catch_ups"] > 1:
            notes.append(f"{slave.name}: " + ", ".join(
                f"{state[name]} {name}" for name in ("gaps", "catch_ups", "full_syncs", "sessions")))
        if applied != seq:
            raise Failure(f"{slave.name} applied {applied}, the master is at {seq}")
        missing = [key for key, item in zip(keys, items) if item is None or item.value != VALUE]
        if missing:
            raise Failure(f"{slave.name} lacks keys the master acknowledged: {missing[:5]}")
    return notes


# -- the runs ------------------------------------------------------------------------------------

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


def throughput(args, work: str, placement, counter) -> dict:
    """{(mode, slaves): [result per round]}, rounds interleaved over the configurations."""
    results: dict = {}
    for _ in range(args.rounds):
        for mode in ("set", "mset"):
            for slaves in (0, 1, 2):
                cluster = Cluster(os.path.join(work, f"run-{next(counter)}"), slaves, placement)
                try:
                    results.setdefault((mode, slaves), []).append(run_load(cluster, args, mode))
                finally:
                    cluster.stop()
    return results


def print_throughput(args, results: dict) -> list[str]:
    print(f"Write throughput: {args.writers} writer processes, {args.duration:g} s each, "
          f"{BATCH}-byte values, best of {args.rounds} (writes/s; every round in brackets):")
    print(f"  {'workload':<12} {'slaves':>6} {'writes/s':>9}  {'vs 0':>5}  {'ack p50/p99 ms':>15}"
          f"  {'master CPU':>10}  {'slave CPU':>9}  {'max behind':>10}  {'caught up':>9}  rounds")
    print(f"  {'':<12} {'':>6} {'':>9}  {'':>5}  {'':>15}  {'us/write':>10}  {'us/write':>9}"
          f"  {'(seq nos)':>10}  {'after ms':>9}")
    verdicts = []
    for mode, label in (("set", "sync set"), ("mset", f"mset of {BATCH}")):
        base = max(r["rate"] for r in results[(mode, 0)])
        for slaves in (0, 1, 2):
            runs = results[(mode, slaves)]
            best = max(runs, key=lambda r: r["rate"])
            ratio = best["rate"] / base
            slave_cpu = "/".join(f"{c:.0f}" for c in best["slave_cpu_us"]) or "-"
            verdict = ""
            if slaves:
                verdict = "PASS" if ratio >= THROUGHPUT_GOAL else "MISS"
                verdicts.append(f"{label}, {slaves} slave{'s' if slaves > 1 else ''}: {ratio:.2f}x {verdict}")
            print(f"  {label:<12} {slaves:>6} {best['rate']:>9,.0f}  {ratio:>4.2f}x  "
                  f"{fmt_ms(best['ack_p50']):>7}/{fmt_ms(best['ack_p99']):<7}  "
                  f"{best['master_cpu_us']:>10.0f}  {slave_cpu:>9}  "
                  f"{best['peak'][0] if slaves else '-':>10}  "
                  f"{fmt_ms(best['converged']) if slaves else '-':>9}  "
                  "[" + ", ".join(f"{r['rate']:,.0f}" for r in runs) + "]")
    for (mode, slaves), runs in sorted(results.items()):
        for number, run in enumerate(runs, 1):
            if run["notes"]:
                print(f"  note, {mode} with {slaves} slaves, round {number}: " + "; ".join(run["notes"]))
    print(f"goal, slaves cost the master under 15 % of its write rate (>= {THROUGHPUT_GOAL}x): "
          + "; ".join(verdicts))
    print("  (slaves share this machine's CPUs with the master and the writers: the ratio "
          "counts their CPU too, not only the master's work for them)")
    return [v for v in verdicts if v.endswith("MISS")]


def lag(args, work: str, placement, counter, peak_rate: float) -> bool:
    rate = args.rate or peak_rate / 2
    cluster = Cluster(os.path.join(work, f"run-{next(counter)}"), 1, placement)
    try:
        result = run_load(cluster, args, "set", rate=rate, probe=True)
    finally:
        cluster.stop()
    source = "--rate" if args.rate else f"half the 0-slave sync set peak of {peak_rate:,.0f}"
    print(f"Replication lag: 1 slave, {args.writers} writers paced to {rate:,.0f} sync sets/s "
          f"({source}), {args.duration:g} s:")
    late = (f"{result['late']} of {result['ops']} sends more than 1 ms behind schedule (at most "
            f"{fmt_ms(result['slip'][0])} ms{at_time(result['slip'][1], result['t0'])})"
            if result["late"] else f"none of {result['ops']} sends more than 1 ms behind schedule")
    print(f"  achieved {result['rate']:,.0f} writes/s; {late}; "
          f"ack p50/p99 {fmt_ms(result['ack_p50'])}/{fmt_ms(result['ack_p99'])} ms")
    lags = [lag for _, lag in result["lags"]]
    p99 = percentile(lags, 0.99)
    verdict = "PASS" if p99 < LAG_GOAL_MS / 1000 else "MISS"
    print(f"  lag, master's ack -> slave serves the value, {len(lags)} sampled writes (every "
          f"{args.sample_every}th; the probe polled {result['polls']} times, every "
          f"{args.probe_interval_ms:g} ms when waiting, so figures are up to a poll late):")
    print(f"    p50 {fmt_ms(percentile(lags, 0.5))} ms  p90 {fmt_ms(percentile(lags, 0.9))} ms  "
          f"p99 {fmt_ms(p99)} ms  max {fmt_ms(max(lags, default=math.nan))} ms  "
          f"({verdict}, goal p99 < {LAG_GOAL_MS:g} ms)")
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
        raise Failure(f"{result['unseen']} acknowledged writes never became visible on the slave")
    return verdict == "PASS"


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
    parser.add_argument("--pin", choices=sorted(PLACEMENTS), default="none",
                        help="; ".join(f"{k}: {v}" for k, v in PLACEMENT_TEXT.items()))
    args = parser.parse_args()
    placement = PLACEMENTS[args.pin]
    if placement is not None:
        if shutil.which("taskset") is None or (os.cpu_count() or 1) < 2:
            parser.error("--pin needs taskset and 2 CPUs")
        os.sched_setaffinity(0, placement[2])  # writers and probe inherit it

    INTERRUPTS.install()

    work = tempfile.mkdtemp(prefix="yaddb-replication-bench-")
    counter = iter(range(1, 1_000_000))
    misses: list[str] = []
    print(f"load average at start: {loadavg()}; {os.cpu_count()} CPUs; {PLACEMENT_TEXT[args.pin]}; "
          f"nodes --fsync interval; each fresh cluster "
          + (f"warmed up with {args.warmup_keys:,} keys" if args.warmup_keys else "measured cold"))
    try:
        peak = 0.0
        if args.only in ("all", "throughput"):
            results = throughput(args, work, placement, counter)
            misses += print_throughput(args, results)
            peak = max(r["rate"] for r in results[("set", 0)])
        if args.only in ("all", "lag"):
            if not peak and not args.rate:
                cluster = Cluster(os.path.join(work, f"run-{next(counter)}"), 0, placement)
                try:
                    peak = run_load(cluster, args, "set")["rate"]
                finally:
                    cluster.stop()
            if not lag(args, work, placement, counter, peak):
                misses.append("lag")
        print(f"load average at end: {loadavg()}; goals missed: {len(misses)}")
        return 0
    except Failure as exc:
        print(f"FAILED: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted; stopping every process", file=sys.stderr)
        return 130
    finally:
        with signals_held():
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
