"""The clients of bench_cluster.py: a YADDB or Redis client per store, the steps of each
workload (set, get, mset, mget) and their timed windows, in this process or in spawned client
processes started on a common time. Its own module so that a spawned client imports only
this, and bench_cluster.py holds the run and its report."""
from __future__ import annotations

import itertools
import queue
import time
from typing import Callable

from common import LOCALHOST, SPAWN, BenchError, reap
from node_stores import RedisStore

BATCH = 100
WARMUP_S = 0.3             # of the workload's own operation, before each timed window
GET_POOL = 2000            # keys a sync-get window reads round and round
MGET_POOL_BATCHES = 100    # batches of BATCH keys an mget window reads round and round
CLIENT_POOL = 1000         # keys each client process reads round and round
VISIBLE_TIMEOUT_S = 30.0   # for written keys to be readable from master and slave
READY_TIMEOUT_S = 120.0    # for the client processes to be connected and warmed up
START_DELAY_S = 0.2        # from the go signal to the client processes' common start


# -- stores and steps ----------------------------------------------------------------------

def connect(store: str, ports: dict):
    """A client of `store` (yaddb, yaddb-keys, yaddb-zmq, redis or redis-unix): YADDB's with
    Client's defaults, the keyed one with the cluster's own keys, or with local=False;
    redis-py as bench_node's RedisStore (pipelines of transaction=False for mset and mget),
    on TCP or on Redis's Unix socket."""
    if store.startswith("redis"):
        return RedisStore(ports[store])
    from yaddb import Client  # here: ZeroMQ loads on first use (as common.client_to)
    endpoint = f"tcp://{LOCALHOST}:{ports['zmq']}"
    if store == "yaddb-keys":
        return Client(endpoint, keys=ports["keys"])
    return Client(endpoint, local=store != "yaddb-zmq")


def write_pool(client, prefix: bytes, count: int, value: bytes) -> list[bytes]:
    """`count` keys written in batches and read back until each batch is found whole twice in
    a row (the router's reads take master and slave in turn); the keys."""
    keys = [prefix + b"%08d" % i for i in range(count)]
    batches = [keys[i:i + BATCH] for i in range(0, count, BATCH)]
    for batch in batches:
        client.mset([(key, value) for key in batch])
    deadline = time.monotonic() + VISIBLE_TIMEOUT_S
    for batch in batches:
        whole = 0
        while whole < 2:
            if any(item is None for item in client.mget(batch)):
                whole = 0
                if time.monotonic() > deadline:
                    raise BenchError(f"keys written under {prefix!r} were not all readable "
                                     f"within {VISIBLE_TIMEOUT_S:g} s")
                time.sleep(0.01)
            else:
                whole += 1
    return keys


def make_step(client, kind: str, prefix: bytes, value: bytes, pool: int,
              misses: list) -> Callable[[], int]:
    """One operation of `kind` (set, get, mset, mget) per call, returning the keys it handled;
    sets on new keys under `prefix` each call, reads over keys written here first (`pool`
    keys; for mget, `pool` batches). A read that finds nothing adds to misses[0]."""
    counter = itertools.count()
    if kind == "set":
        def set_() -> int:
            client.set(prefix + b"%09d" % next(counter), value)
            return 1
        return set_
    if kind == "mset":
        def mset() -> int:
            first = next(counter) * BATCH
            client.mset([(prefix + b"%09d" % n, value) for n in range(first, first + BATCH)])
            return BATCH
        return mset
    if kind == "get":
        keys = write_pool(client, prefix, pool, value)

        def get() -> int:
            if client.get(keys[next(counter) % pool]) is None:
                misses[0] += 1
            return 1
        return get
    if kind == "mget":
        keys = write_pool(client, prefix, pool * BATCH, value)
        batches = [keys[i:i + BATCH] for i in range(0, len(keys), BATCH)]

        def mget() -> int:
            misses[0] += sum(item is None for item in client.mget(batches[next(counter) % pool]))
            return BATCH
        return mget
    raise ValueError(kind)


def window(step: Callable[[], int], start: float, end: float) -> int:
    """Call step() from `start` (time.monotonic(); sleeps until then) until `end`: the keys of
    the operations finished by `end` (the one running across it does not count)."""
    delay = start - time.monotonic()
    if delay > 0:
        time.sleep(delay)
    done = 0
    while True:
        handled = step()
        if time.monotonic() > end:
            return done
        done += handled


def warmed_window(step: Callable[[], int], seconds: float) -> int:
    """A warm-up of WARMUP_S, then a timed window of `seconds`; the keys handled in the latter."""
    now = time.monotonic()
    window(step, now, now + WARMUP_S)
    now = time.monotonic()
    return window(step, now, now + seconds)


# -- the workloads -------------------------------------------------------------------------

def one_client(clients: dict, store: str, kind: str, prefix: bytes, value: bytes,
               seconds: float) -> dict:
    """set, get, mset or mget from the client of `store` in this process."""
    misses = [0]
    step = make_step(clients[store], kind, prefix, value,
                     MGET_POOL_BATCHES if kind == "mget" else GET_POOL, misses)
    done = warmed_window(step, seconds)
    return {"rate": done / seconds, "ops": done, "misses": misses[0]}


def client_process(store: str, ports: dict, kind: str, prefix: bytes, value: bytes,
                   seconds: float, ready, go, start_at, results) -> None:
    """One of the concurrent clients (a spawned process): its own client, its keys written,
    a warm-up; then, from the common start time, sync sets or gets for `seconds`."""
    client = None
    try:
        client = connect(store, ports)
        misses = [0]
        step = make_step(client, kind, prefix, value, CLIENT_POOL, misses)
        now = time.monotonic()
        window(step, now, now + WARMUP_S)
        ready.put("ready")
        if not go.wait(READY_TIMEOUT_S + 30):
            raise BenchError("no go signal")
        done = window(step, start_at.value, start_at.value + seconds)
        results.put({"ops": done, "misses": misses[0]})
    except BaseException as exc:  # reported by the parent
        results.put({"error": f"{type(exc).__name__}: {exc}"})
        ready.put("failed")
    finally:
        if client is not None:
            client.close()


def collect(from_queue, count: int, procs: list, timeout: float, what: str) -> list:
    """`count` items from `from_queue` within `timeout` s; BenchError if the processes die or
    the time runs out first."""
    got, deadline = [], time.monotonic() + timeout
    while len(got) < count:
        if time.monotonic() > deadline:
            raise BenchError(f"{what}: {len(got)} of {count} client processes in time")
        try:
            got.append(from_queue.get(timeout=1.0))
        except queue.Empty:
            if not any(proc.is_alive() for proc in procs):
                raise BenchError(f"{what}: client processes died ({len(got)} of {count} "
                                 f"reported)") from None
    return got


def many_clients(ports: dict, store: str, kind: str, prefix: bytes, value: bytes,
                 seconds: float, count: int) -> dict:
    """`count` client processes of sync sets or gets at once: all their ops in the window,
    per second."""
    ready, results, go = SPAWN.Queue(), SPAWN.Queue(), SPAWN.Event()
    start_at = SPAWN.Value("d", 0.0)
    procs = [SPAWN.Process(target=client_process, daemon=True,
                           args=(store, ports, kind, prefix + b"p%d:" % n, value, seconds,
                                 ready, go, start_at, results))
             for n in range(count)]
    try:
        for proc in procs:
            proc.start()
        collect(ready, count, procs, READY_TIMEOUT_S, f"{store} {kind} ready")
        start_at.value = time.monotonic() + START_DELAY_S
        go.set()
        got = collect(results, count, procs, seconds + 60, f"{store} {kind} results")
    finally:
        go.set()
        reap(procs, timeout=30)
    errors = sorted({r["error"] for r in got if "error" in r})
    if errors:
        raise BenchError(f"{store} {kind} clients failed: {'; '.join(errors)}")
    done = sum(r["ops"] for r in got)
    return {"rate": done / seconds, "ops": done, "misses": sum(r["misses"] for r in got),
            "per_process": [r["ops"] for r in got]}
