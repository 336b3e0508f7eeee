"""bench_replication's load: writer processes against the master, a probe process that
watches a slave for sampled writes, and a sampler thread that reads where master and slaves
are; run_load() runs them against a cluster and returns the figures of one run."""
from __future__ import annotations

import math
import queue
import signal
import threading
import time
from typing import Optional

from common import SPAWN, BenchError, client_to, cpu_seconds, percentiles, reap
from replication_cluster import (CONVERGE_TIMEOUT_S, VALUE, Cluster, check_copies, converge,
                                 signals_held, warm_up)
from yaddb.errors import YaddbError

BATCH = 100
SAMPLE_S = 0.05          # how often the sampler asks master and slaves where they are


# -- client processes ----------------------------------------------------------------------------

def writer_process(port: int, wid: int, writers: int, mode: str, duration: float,
                   rate: float, sample_every: int, results, samples, start, go,
                   w: object = 1, keys: Optional[str] = None) -> None:
    """One writer: `set`s (mode "set") or `mset`s of BATCH (mode "mset") of its own keys from
    start.value for `duration` s; closed loop when rate is 0, else paced open loop at
    rate / writers, shifted by wid / rate so the writers interleave. Every `sample_every`-th
    write's (key, ack time) goes to `samples` (None: no sampling). Puts its figures on
    `results`. `w`: the write concern of every write. `keys`: CURVE keys' folder (None: plain)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent stops us
    try:
        client = client_to(port, timeout=10.0, direct=False, w=w, keys=keys)
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


def probe_process(port: int, samples, results, interval: float,
                  keys: Optional[str] = None) -> None:
    """Wait for (key, ack time) pairs; poll the slave with one mget of every key still unseen,
    every `interval` s, and record (ack, lag) when a reply first has the key. None ends it."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        client = client_to(port, timeout=5.0, direct=False, keys=keys)
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
        master = self.cluster.master.client(timeout=5.0)
        slaves = [slave.client(timeout=5.0) for slave in self.cluster.slaves]
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
        return percentiles([max(behind) for _, behind, _, _, _ in self.samples if behind], 0.5)[0]

    def reported_peaks(self) -> tuple[int, int]:
        """The peaks of the lag the master's stats and the slaves' own stats report."""
        return (max([sample[3] for sample in self.samples] or [0]),
                max([sample[4] for sample in self.samples] or [0]))


def run_load(cluster: Cluster, args, mode: str, rate: float = 0.0, probe: bool = False,
             w: object = 1) -> dict:
    """--writers processes against the cluster's master (and the probe on its first slave),
    writing with concern `w`: start them, release them together, collect their figures, wait
    for the slaves to converge."""
    results, start, go = SPAWN.Queue(), SPAWN.Value("d", 0.0), SPAWN.Event()
    samples = SPAWN.Queue() if probe else None
    procs = [SPAWN.Process(target=writer_process, daemon=True,
                           args=(cluster.master.port, wid, args.writers, mode, args.duration,
                                 rate, args.sample_every, results, samples, start, go, w,
                                 cluster.keys))
             for wid in range(args.writers)]
    if probe:
        procs.append(SPAWN.Process(target=probe_process, daemon=True,
                                   args=(cluster.slaves[0].port, samples, results,
                                         args.probe_interval_ms / 1000, cluster.keys)))
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
                raise BenchError(f"{message[1]} failed to start: {message[2]}")
            ready += 1
        t0 = start.value = time.monotonic() + 0.05
        go.set()
        if sampler is not None:
            sampler.start()
        while time.monotonic() < t0:
            time.sleep(0.001)
        cpu0 = [cpu_seconds(node.child.pid) for node in cluster.nodes]
        done = []
        while len(done) < args.writers:
            message = results.get(timeout=args.duration + 120)
            if message[0] == "error":
                raise BenchError(f"writer {message[1]} failed: {message[2]}")
            done.append(message)
        stopped = max(message[3] for message in done)  # the last ack
        master_cpu = cpu_seconds(cluster.master.child.pid) - cpu0[0]
        if probe:
            samples.put(None)
        converged, seq = converge(cluster, stopped)
        slave_cpu = [cpu_seconds(node.child.pid) - c for node, c in zip(cluster.slaves, cpu0[1:])]
        out = {}
        if probe:
            message = results.get(timeout=CONVERGE_TIMEOUT_S + 30)
            if message[0] == "error":
                raise BenchError(f"the probe failed: {message[2]}")
            _, out["lags"], out["unseen"], out["polls"] = message
        if sampler is not None:
            sampler.finish()
            if sampler.error:
                raise BenchError(f"sampling stats failed: {sampler.error}")
        reap(procs, timeout=10)
        notes = check_copies(cluster, done, seq)
        written = sum(message[2] for message in done)
        ack_p50, ack_p99 = percentiles([lat for message in done for lat in message[5]], 0.5, 0.99)
        out.update({
            "t0": t0, "writes": written, "rate": written / (stopped - t0),
            "ack_p50": ack_p50, "ack_p99": ack_p99,
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
        raise BenchError("a writer or the probe went silent (no message within its timeout)") from None
    finally:
        if sampler is not None and sampler.is_alive():
            sampler.finish()
        with signals_held():
            reap(procs, timeout=0)  # still running only after an error or Ctrl-C
