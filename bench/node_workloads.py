"""bench_node's workloads: each takes a connected store (node_stores.py) and returns its figures,
{"set": ..., "get": ..., "total": ...} or {"total": ...}, each with ops/s and maybe p50/p99.
Every read is checked: a benchmark of wrong answers is worthless."""
import random
import time
from time import perf_counter_ns

from common import SPAWN, BenchError, percentiles, reap
from node_stores import STORES

VALUE_SIZE = 100
BATCH = 100
WARMUP_OPS = 300

# Key ranges, so no workload reads or overwrites another's keys (client c: CLIENTS_BASE +
# c * 1M); round r of a workload adds r * ROUND_KEYS.
SYNC_BASE, BATCH_BASE, CLIENTS_BASE, WARMUP_BASE = 0, 10_000_000, 20_000_000, 90_000_000
ROUND_KEYS = 100_000_000


def make_keys(base, n):
    import mmh3
    return [mmh3.hash_bytes(str(i).encode()) for i in range(base, base + n)]


def make_values(base, n):
    """100-byte windows of a random pool, each at its own offset (613 is prime to 60000)."""
    pool = random.Random(base).randbytes(1 << 16)
    return [pool[(i * 613) % 60000:(i * 613) % 60000 + VALUE_SIZE] for i in range(n)]


def figures(ops, elapsed_ns, latencies_ns=None):
    """ops/s, and p50/p99 in microseconds of the given latencies (per op or per batch)."""
    out = {"ops": ops, "seconds": round(elapsed_ns / 1e9, 4),
           "ops_per_s": round(ops / (elapsed_ns / 1e9), 1) if elapsed_ns else 0.0}
    if latencies_ns:
        p50, p99 = percentiles(latencies_ns, 0.50, 0.99)
        out["p50_us"], out["p99_us"] = round(p50 / 1000, 1), round(p99 / 1000, 1)
    return out


def combined(a, b):
    """Two phases run one after the other, as one figure (no latency percentiles)."""
    return figures(a["ops"] + b["ops"], int((a["seconds"] + b["seconds"]) * 1e9))


class Deadline:
    def __init__(self, seconds, what):
        self.at = perf_counter_ns() + int(seconds * 1e9)
        self.seconds, self.what = seconds, what

    def check(self):
        if perf_counter_ns() > self.at:
            raise BenchError("%s took over %.0f s; stopped" % (self.what, self.seconds))


def timed_each(call, arguments, deadline):
    """call(*args) for each args in `arguments`, one at a time: (latency in ns of each call,
    how many replies were None or, for a list, held None)."""
    latencies, misses = [], 0
    record, clock = latencies.append, perf_counter_ns
    for n, args in enumerate(arguments):
        t0 = clock()
        reply = call(*args)
        record(clock() - t0)
        if reply is None:
            misses += 1
        elif type(reply) is list:
            misses += reply.count(None)
        if not n & 255:
            deadline.check()
    return latencies, misses


def set_then_get(ops, set_call, set_args, get_call, get_args, deadline):
    """A timed phase of `ops` keys written, then one of them read: {"set", "get", "total"}."""
    start = perf_counter_ns()
    set_lat, _ = timed_each(set_call, set_args, deadline)
    mid = perf_counter_ns()
    get_lat, misses = timed_each(get_call, get_args, deadline)
    end = perf_counter_ns()
    if misses:
        raise BenchError("%s: %d of %d gets found nothing" % (deadline.what, misses, ops))
    out = {"set": figures(ops, mid - start, set_lat), "get": figures(ops, end - mid, get_lat)}
    out["total"] = combined(out["set"], out["get"])
    return out


def warm_up(store):
    keys, values = make_keys(WARMUP_BASE, WARMUP_OPS), make_values(WARMUP_BASE, WARMUP_OPS)
    for key, value in zip(keys, values):
        store.set(key, value)
        store.get(key)


def verify(store, keys, values, sample=200):
    """Read back a sample, outside timing."""
    rng = random.Random(len(keys))
    for i in rng.sample(range(len(keys)), min(sample, len(keys))):
        got = store.value(keys[i])
        if got != values[i]:
            raise BenchError("%s: key #%d read back %r, not the value written"
                             % (store.name, i, got if got is None else got[:20] + b"..."))


def shuffled(items, seed):
    items = list(items)
    random.Random(seed).shuffle(items)
    return items


def sync_workload(store, n, max_seconds, base=SYNC_BASE):
    """N sets, then N gets in random order, one request at a time; per-op latency."""
    keys, values = make_keys(base, n), make_values(base, n)
    warm_up(store)
    out = set_then_get(n, store.set, zip(keys, values), store.get,
                       ((key,) for key in shuffled(keys, n)),
                       Deadline(max_seconds, "%s sync" % store.name))
    verify(store, keys, values)
    return out


def batched_workload(store, n, max_seconds, base=BATCH_BASE):
    """N keys set in batches of BATCH, then read in batches in random order; per-batch latency."""
    keys, values = make_keys(base, n), make_values(base, n)
    pairs = list(zip(keys, values))
    set_batches = [pairs[i:i + BATCH] for i in range(0, n, BATCH)]
    order = shuffled(keys, n)
    get_batches = [order[i:i + BATCH] for i in range(0, n, BATCH)]
    warm_up(store)
    store.mset(set_batches[0][:10])
    store.mget(get_batches[0][:10])
    out = set_then_get(n, store.mset, ((batch,) for batch in set_batches), store.mget,
                       ((batch,) for batch in get_batches),
                       Deadline(max_seconds, "%s batched" % store.name))
    verify(store, keys, values)
    return out


def client_process(kind, port, base, count, max_seconds, barrier, results):
    """One of the concurrent clients (a spawned process): sync sets, then gets, of its keys."""
    try:
        store = STORES[kind](port)
        keys, values = make_keys(base, count), make_values(base, count)
        store.get(keys[0])  # connected
        barrier.wait(60)
        deadline = Deadline(max_seconds, "%s client" % kind)
        start = time.monotonic_ns()  # system-wide clock: comparable across the processes
        set_lat, _ = timed_each(store.set, zip(keys, values), deadline)
        get_lat, misses = timed_each(store.get, ((key,) for key in shuffled(keys, base)), deadline)
        end = time.monotonic_ns()
        store.close()
        results.put({"start": start, "end": end, "ops": 2 * count, "misses": misses,
                     "lat": set_lat + get_lat})
    except BaseException as exc:  # reported by the parent
        results.put({"error": "%s: %s" % (type(exc).__name__, exc)})


def clients_workload(kind, port, clients, per_client, max_seconds, base=CLIENTS_BASE):
    """`clients` processes at once, each set+get of `per_client` keys of its own."""
    barrier = SPAWN.Barrier(clients)
    results = SPAWN.Queue()
    procs = [SPAWN.Process(target=client_process, daemon=True,
                           args=(kind, port, base + c * 1_000_000, per_client, max_seconds,
                                 barrier, results))
             for c in range(clients)]
    got = []
    try:
        for p in procs:
            p.start()
        give_up = time.monotonic() + 60 + max_seconds
        while len(got) < clients:
            remaining = give_up - time.monotonic()
            if remaining <= 0:
                raise BenchError("%s clients: only %d of %d reported in time"
                                 % (kind, len(got), clients))
            try:
                got.append(results.get(timeout=min(remaining, 1.0)))
            except Exception:  # queue.Empty: look whether a client died without reporting
                if all(not p.is_alive() for p in procs) and results.empty():
                    raise BenchError("%s clients: %d of %d died without a report"
                                     % (kind, clients - len(got), clients))
    finally:
        reap(procs)
    errors = [r["error"] for r in got if "error" in r]
    if errors:
        raise BenchError("%s clients failed: %s" % (kind, "; ".join(sorted(set(errors)))))
    misses = sum(r["misses"] for r in got)
    if misses:
        raise BenchError("%s clients: %d gets found nothing" % (kind, misses))
    elapsed = max(r["end"] for r in got) - min(r["start"] for r in got)
    lat = [x for r in got for x in r["lat"]]
    return {"total": figures(sum(r["ops"] for r in got), elapsed, lat)}
