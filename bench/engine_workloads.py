"""bench_engine's workloads, one function each, and the timing they share. A workload takes an
open store, the data and the size, and returns one result: a dict of its figures."""
from time import perf_counter_ns

from common import percentiles

CHUNK = 50_000            # keys materialised at a time when filling
VERIFY_SAMPLE = 1000      # values compared after readrandom (outside timing)


def result(workload, ops, elapsed_ns, latencies=None, **extra):
    r = {"workload": workload, "ops": ops, "seconds": elapsed_ns / 1e9,
         "ops_per_s": ops / (elapsed_ns / 1e9) if elapsed_ns else None,
         "us_per_op": elapsed_ns / 1000.0 / ops if ops else None,
         "p50_us": None, "p99_us": None}
    if latencies:
        r["p50_us"], r["p99_us"] = (ns / 1000.0 for ns in percentiles(latencies, 0.50, 0.99))
    r.update(extra)
    return r


def timed_puts(put, data, order):
    """Single puts of keys `order` (one call each); returns elapsed ns."""
    elapsed = 0
    for start in range(0, len(order), CHUNK):
        pairs = [(data.key(i), data.value(i)) for i in order[start:start + CHUNK].tolist()]
        t0 = perf_counter_ns()
        for k, v in pairs:
            put(k, v)
        elapsed += perf_counter_ns() - t0
    return elapsed


def timed_gets(get, keys):
    """Gets with per-op latency; returns (elapsed ns, latencies ns, found)."""
    clock = perf_counter_ns
    lat = []
    record = lat.append
    found = 0
    t0 = clock()
    for k in keys:
        s = clock()
        v = get(k)
        record(clock() - s)
        if v is not None:
            found += 1
    return clock() - t0, lat, found


def w_fillrandom(store, data, n, args):
    """Put every key once, random order, one call each."""
    elapsed = timed_puts(store.put, data, data.permutation(n, "fill"))
    return result("fillrandom", n, elapsed)


def w_readhot(store, data, n, args):
    """Write fresh keys into an empty memtable, then read them randomly."""
    store.flush_memtable()
    before = store.stats().get("segments")
    hot = [data.key(i) for i in range(n, n + args.hot_keys)]
    for i, k in enumerate(hot, start=n):
        store.put(k, data.value(i))
    ops = min(args.max_ops, 100_000)
    keys = data.rng(f"readhot/{n}").choices(hot, k=ops)
    elapsed, lat, found = timed_gets(store.get, keys)
    after = store.stats().get("segments")
    extra = {"not_found": ops - found}
    if before is not None and after is not None and after > before:
        extra["note"] = "memtable flushed during readhot (segments %d -> %d)" % (before, after)
    return result("readhot", ops, elapsed, lat, **extra)


def read_sample(data, n, args, tag):
    ops = min(args.max_ops, n)
    return data.rng(f"{tag}/{n}").sample(range(n), ops)


def w_readrandom(store, data, n, args):
    """Random gets of existing keys from a reopened (on-disk) database."""
    idx = read_sample(data, n, args, "readrandom")
    keys = [data.key(i) for i in idx]
    elapsed, lat, found = timed_gets(store.get, keys)
    mismatches = sum(store.get(data.key(i)) != data.value(i) for i in idx[:VERIFY_SAMPLE])
    return result("readrandom", len(keys), elapsed, lat,
                  not_found=len(keys) - found, value_mismatches=mismatches)


def w_readmissing(store, data, n, args):
    """Gets of keys that were never written."""
    keys = [data.missing_key(i) for i in read_sample(data, n, args, "readmissing")]
    elapsed, lat, found = timed_gets(store.get, keys)
    return result("readmissing", len(keys), elapsed, lat, found_unexpectedly=found)


def w_fillbatch(store, data, n, args):
    """Batch puts of args.batch_size keys into a fresh database."""
    bs = args.batch_size
    chunk = max(bs, CHUNK // bs * bs)
    order = data.permutation(n, "fillbatch")
    elapsed = 0
    for start in range(0, n, chunk):
        pairs = [(data.key(i), data.value(i)) for i in order[start:start + chunk].tolist()]
        batches = [pairs[j:j + bs] for j in range(0, len(pairs), bs)]
        t0 = perf_counter_ns()
        for b in batches:
            store.batch_put(b)
        elapsed += perf_counter_ns() - t0
    return result("fillbatch", n, elapsed, batch_size=bs)


def w_fillsync(store, data, n, args):
    """Durable single puts: fsync=always / sqlite FULL / leveldb sync=True."""
    ops = args.sync_ops
    pairs = [(data.key(i), data.value(i)) for i in data.permutation(ops, "fillsync").tolist()]
    clock, put, lat = perf_counter_ns, store.put, []
    t0 = clock()
    for k, v in pairs:
        s = clock()
        put(k, v)
        lat.append(clock() - s)
    return result("fillsync", ops, clock() - t0, lat)
