#!/usr/bin/env python3
"""Benchmark yaddb.lsm.Engine against LevelDB (plyvel) and sqlite3 (WAL).

One run measures every selected system on the same keys and values and prints
throughput, per-op latency (p50/p99) and the ratio to LevelDB, then checks the
performance goals of the storage engine.

Every (system, size) phase runs in its own subprocess (this script re-invoked
with the hidden ``--worker system,size`` argument), so the peak RSS reported
for a system is that system's own.

This is a benchmark, not a test: it only reports figures.  See bench/README.md.
"""
import argparse
import functools
import json
import os
import random
import resource
import shutil
import subprocess
import sys
import tempfile
from time import perf_counter_ns

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO_ROOT not in sys.path:
    sys.path.insert(0, REPO_ROOT)

SYSTEMS = ("yaddb", "leveldb", "sqlite")
VALUE_SIZE = 100
CHUNK = 50_000            # keys materialised at a time when filling
VERIFY_SAMPLE = 1000      # values compared after readrandom (outside timing)
GROWTH_SIZES = (100_000, 1_000_000, 10_000_000)

# Goals of the storage-engine issue (ours / LevelDB, ours with fsync=interval).
GOAL_RATIOS = (("fillrandom", "put", 0.3),
               ("readrandom", "disk get", 0.3),
               ("readmissing", "missing get", 0.5))
GOAL_BYTES_PER_KEY = 24.0
GOAL_GROWTH_P99 = 2.0


# --------------------------------------------------------------------------
# Data: keys, values, orders.  Everything derives from --seed.
# --------------------------------------------------------------------------

class Data:
    """Deterministic keys and values shared by every system."""

    POOL_BITS = 22  # 4 MiB of random bytes; values are 100-byte windows

    def __init__(self, seed):
        import mmh3
        self._hash = mmh3.hash_bytes
        self.seed = seed
        self._pool = random.Random(seed).randbytes((1 << self.POOL_BITS) + VALUE_SIZE)
        self._mask = (1 << self.POOL_BITS) - 1

    def key(self, i):
        """Key i: 16-byte MurmurHash3 of str(i)."""
        return self._hash(str(i).encode())

    def missing_key(self, i):
        """Keys that are never written (different hash inputs)."""
        return self._hash(b"missing-%d" % i)

    def value(self, i):
        off = (i * 0x9E3779B1) & self._mask
        return self._pool[off:off + VALUE_SIZE]

    def rng(self, tag):
        return random.Random(f"{self.seed}/{tag}")

    def permutation(self, n, tag):
        """0..n-1 in random order, as a compact uint32 numpy array."""
        import numpy as np
        order = np.arange(n, dtype=np.uint32)
        np.random.default_rng([self.seed, zlib_crc(tag)]).shuffle(order)
        return order


def zlib_crc(text):
    import zlib
    return zlib.crc32(text.encode())


# --------------------------------------------------------------------------
# Stores: a thin adapter per system.  put/get are bound callables so the
# timed loops call the library as directly as possible.
# --------------------------------------------------------------------------

class Store:
    name = "?"

    def __init__(self, path, args, durable):
        self.path, self.args, self.durable = path, args, durable
        self.put = self.get = None

    def open(self):
        raise NotImplementedError

    def batch_put(self, pairs):
        raise NotImplementedError

    def flush_memtable(self):
        """Empty the write buffer before the readhot phase (ours only)."""

    def settle(self):
        """Push everything to disk and let background work finish."""

    def stats(self):
        return {}

    def close(self):
        raise NotImplementedError

    def reopen(self):
        self.close()
        self.open()


class YaddbStore(Store):
    name = "yaddb"

    def open(self):
        from yaddb.lsm import Engine
        self.eng = Engine(self.path,
                          fsync="always" if self.durable else "interval",
                          fsync_interval_ms=self.args.fsync_interval_ms,
                          memtable_bytes=self.args.memtable_bytes)
        self.put, self.get = self.eng.put, self.eng.get

    def batch_put(self, pairs):
        self.eng.write_batch(pairs)

    def flush_memtable(self):
        self.eng.flush(wait=True)
        self.eng.wait_for_compactions()

    def settle(self):
        self.eng.flush(wait=True)
        self.eng.wait_for_compactions()

    def stats(self):
        return dict(self.eng.stats())

    def close(self):
        self.eng.close()


class LeveldbStore(Store):
    name = "leveldb"

    def open(self):
        import plyvel
        opts = {"create_if_missing": True}
        if self.args.leveldb_bloom_bits:
            opts["bloom_filter_bits"] = self.args.leveldb_bloom_bits
        self.db = plyvel.DB(self.path, **opts)
        self.put = functools.partial(self.db.put, sync=True) if self.durable else self.db.put
        self.get = self.db.get

    def batch_put(self, pairs):
        with self.db.write_batch(sync=self.durable) as wb:
            for k, v in pairs:
                wb.put(k, v)

    def close(self):
        self.db.close()


class SqliteStore(Store):
    name = "sqlite"
    SQL_PUT = "INSERT OR REPLACE INTO kv (k, v) VALUES (?, ?)"
    SQL_GET = "SELECT v FROM kv WHERE k = ?"

    def open(self):
        import sqlite3
        os.makedirs(self.path, exist_ok=True)
        self.conn = sqlite3.connect(os.path.join(self.path, "kv.sqlite"), isolation_level=None)
        self.conn.execute("PRAGMA journal_mode=WAL")
        self.conn.execute("PRAGMA synchronous=%s" % ("FULL" if self.durable else "NORMAL"))
        self.conn.execute("CREATE TABLE IF NOT EXISTS kv (k BLOB PRIMARY KEY, v BLOB) WITHOUT ROWID")
        self.cur = cur = self.conn.cursor()
        execute, sql_put, sql_get = cur.execute, self.SQL_PUT, self.SQL_GET

        def put(k, v):  # autocommit: each statement is its own transaction
            execute(sql_put, (k, v))

        def get(k):
            row = execute(sql_get, (k,)).fetchone()
            return None if row is None else row[0]

        self.put, self.get = put, get

    def batch_put(self, pairs):
        self.cur.execute("BEGIN")
        self.cur.executemany(self.SQL_PUT, pairs)
        self.cur.execute("COMMIT")

    def close(self):
        self.cur.close()
        self.conn.close()


STORES = {s.name: s for s in (YaddbStore, LeveldbStore, SqliteStore)}


# --------------------------------------------------------------------------
# Timing helpers
# --------------------------------------------------------------------------

def percentile_us(sorted_ns, q):
    if not sorted_ns:
        return None
    return sorted_ns[min(len(sorted_ns) - 1, round(q * (len(sorted_ns) - 1)))] / 1000.0


def result(workload, ops, elapsed_ns, latencies=None, **extra):
    r = {"workload": workload, "ops": ops, "seconds": elapsed_ns / 1e9,
         "ops_per_s": ops / (elapsed_ns / 1e9) if elapsed_ns else None,
         "us_per_op": elapsed_ns / 1000.0 / ops if ops else None,
         "p50_us": None, "p99_us": None}
    if latencies:
        latencies.sort()
        r["p50_us"] = percentile_us(latencies, 0.50)
        r["p99_us"] = percentile_us(latencies, 0.99)
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


# --------------------------------------------------------------------------
# Workloads: one function each.
# --------------------------------------------------------------------------

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


# --------------------------------------------------------------------------
# Worker: runs in its own process, writes its results to a JSON file.
# --------------------------------------------------------------------------

def peak_rss_bytes():
    r = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return r if sys.platform == "darwin" else r * 1024


def children_peak_rss_bytes():
    """Largest peak RSS (VmHWM) among live child processes, e.g. the engine's
    compaction worker (Linux only; None elsewhere).  RUSAGE_CHILDREN is not
    used: after fork/vfork+exec it also counts the parent's RSS at spawn."""
    me, best = str(os.getpid()), None
    try:
        pids = [p for p in os.listdir("/proc") if p.isdigit()]
    except OSError:
        return None
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                if f.read().rsplit(")", 1)[1].split()[1] != me:
                    continue
            with open(f"/proc/{pid}/status") as f:
                for line in f:
                    if line.startswith("VmHWM:"):
                        best = max(best or 0, int(line.split()[1]) * 1024)
        except (OSError, IndexError, ValueError):
            continue
    return best


def anon_rss_bytes():
    """Current anonymous RSS (Linux only): excludes mmap'ed file pages, which
    LevelDB's table reads add to the peak RSS."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("RssAnon:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


class Recorder:
    def __init__(self, out_path, system, size):
        self.out_path = out_path
        self.doc = {"system": system, "size": size, "results": [], "info": {}}

    def add(self, r):
        r["system"], r["size"] = self.doc["system"], self.doc["size"]
        self.doc["results"].append(r)
        log(f"[{r['system']} {r['size']}] {r['workload']}: {fmt_int(r['ops_per_s'])} ops/s")
        self.save()

    def info(self, **kw):
        self.doc["info"].update(kw)
        self.save()

    def save(self):
        self.doc["info"]["peak_rss_bytes"] = peak_rss_bytes()
        child = children_peak_rss_bytes()  # sampled while the store is open
        if child is not None:
            info = self.doc["info"]
            info["children_peak_rss_bytes"] = max(child, info.get("children_peak_rss_bytes", 0))
        anon = anon_rss_bytes()  # sampled after each workload; keep the largest
        if anon is not None:
            self.doc["info"]["anon_rss_bytes"] = max(anon, self.doc["info"].get("anon_rss_bytes", 0))
        tmp = self.out_path + ".tmp"
        with open(tmp, "w") as f:
            json.dump(self.doc, f)
        os.replace(tmp, self.out_path)


def settle_and_reopen(store, rec):
    t0 = perf_counter_ns()
    store.settle()
    rec.info(settle_seconds=(perf_counter_ns() - t0) / 1e9)
    store.reopen()
    rec.info(stats=store.stats())


def worker_compare(system, n, data, args, rec):
    store = STORES[system](os.path.join(args.dir, "main"), args, durable=False)
    store.open()
    rec.add(w_fillrandom(store, data, n, args))
    rec.add(w_readhot(store, data, n, args))
    settle_and_reopen(store, rec)
    rec.add(w_readrandom(store, data, n, args))
    rec.add(w_readmissing(store, data, n, args))
    store.close()
    shutil.rmtree(store.path, ignore_errors=True)

    store = STORES[system](os.path.join(args.dir, "batch"), args, durable=False)
    store.open()
    rec.add(w_fillbatch(store, data, n, args))
    store.close()


def worker_growth(system, n, data, args, rec):
    store = STORES[system](os.path.join(args.dir, "growth"), args, durable=False)
    store.open()
    rec.add(w_fillbatch(store, data, n, args))
    settle_and_reopen(store, rec)
    rec.add(w_readrandom(store, data, n, args))
    rec.add(w_readmissing(store, data, n, args))
    rec.info(stats=store.stats())
    store.close()


def worker_sync(system, data, args, rec):
    store = STORES[system](os.path.join(args.dir, "sync"), args, durable=True)
    store.open()
    rec.add(w_fillsync(store, data, args.sync_ops, args))
    store.close()


def worker_main(args):
    system, what = args.worker.split(",")
    os.makedirs(args.dir, exist_ok=True)  # LevelDB creates only the leaf directory
    data = Data(args.seed)
    if system == "leveldb":
        import plyvel  # noqa: F401  (counted in the baseline, like the engine's import)
    elif system == "yaddb":
        import yaddb.lsm  # noqa: F401
    rec = Recorder(args.worker_out, system, what)
    rec.info(baseline_rss_bytes=peak_rss_bytes())
    if what == "sync":
        worker_sync(system, data, args, rec)
    elif args.growth:
        worker_growth(system, int(what), data, args, rec)
    else:
        worker_compare(system, int(what), data, args, rec)
    rec.save()
    return 0


# --------------------------------------------------------------------------
# Runner (parent process): spawns workers, prints tables and goals.
# --------------------------------------------------------------------------

FORWARDED = ("seed", "max_ops", "sync_ops", "hot_keys", "batch_size",
             "memtable_bytes", "fsync_interval_ms", "leveldb_bloom_bits")


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def fmt_int(x):
    return "-" if x is None else f"{x:,.0f}"


def fmt_f(x, digits=2):
    return "-" if x is None else f"{x:.{digits}f}"


def mib(b):
    return "-" if b is None else f"{b / 2**20:.1f} MiB"


def run_worker(args, scratch, system, what):
    """Run one phase in a subprocess; return its document (maybe partial)."""
    workdir = os.path.join(scratch, f"{system}-{what}")
    out = os.path.join(scratch, f"{system}-{what}.json")
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", f"{system},{what}",
           "--worker-out", out, "--dir", workdir]
    for name in FORWARDED:
        cmd += ["--" + name.replace("_", "-"), str(getattr(args, name))]
    if args.growth:
        cmd.append("--growth")
    log(f"--- {system}, {what} ---")
    error = None
    try:
        proc = subprocess.run(cmd, timeout=args.worker_timeout or None)
        if proc.returncode != 0:
            error = f"worker exited with code {proc.returncode}"
    except subprocess.TimeoutExpired:
        error = f"worker killed after {args.worker_timeout} s"
    doc = {"system": system, "size": what, "results": [], "info": {}}
    if os.path.exists(out):
        with open(out) as f:
            doc = json.load(f)
        os.remove(out)
    if error:
        doc["error"] = error
        log(f"!! {system}, {what}: {error}")
    if not args.keep:
        shutil.rmtree(workdir, ignore_errors=True)
    return doc


def index_of(docs):
    """{(workload, system): result} for one size."""
    return {(r["workload"], d["system"]): r for d in docs for r in d["results"]}


def ratio(a, b):
    if a is None or b is None or not b.get("ops_per_s") or a.get("ops_per_s") is None:
        return None
    return a["ops_per_s"] / b["ops_per_s"]


def bytes_per_key(stats):
    keys = stats.get("keys_on_disk") if stats else None
    if not keys or "index_bytes" not in stats or "bloom_bytes" not in stats:
        return None
    # Every in-memory lookup structure: sparse indexes, per-segment blooms, the engine's key filter.
    return (stats["index_bytes"] + stats["bloom_bytes"] + stats.get("key_filter_bytes", 0)) / keys


def wrong_results(r):
    """Correctness problems seen in a result ('' if none)."""
    fields = ("not_found", "value_mismatches", "found_unexpectedly")
    return "; ".join(f"{f}={r[f]}" for f in fields if r and r.get(f))


def warnings_of(r):
    w = [x for x in (wrong_results(r), (r or {}).get("note")) if x]
    return ("  !! " + "; ".join(w)) if w else ""


def print_table(title, workloads, systems, docs):
    res = index_of(docs)
    print(f"\n== {title} ==")
    print(f"{'workload':<12} {'system':<8} {'ops/s':>11} {'us/op':>9} {'p50 us':>9} "
          f"{'p99 us':>9} {'vs leveldb':>10}")
    for w in workloads:
        for s in systems:
            r = res.get((w, s))
            if r is None:
                print(f"{w:<12} {s:<8} {'(no result)':>11}")
                continue
            rt = ratio(r, res.get((w, "leveldb")))
            print(f"{w:<12} {s:<8} {fmt_int(r['ops_per_s']):>11} {fmt_f(r['us_per_op']):>9} "
                  f"{fmt_f(r['p50_us']):>9} {fmt_f(r['p99_us']):>9} "
                  f"{(fmt_f(rt) + 'x') if rt is not None else '-':>10}{warnings_of(r)}")
    for d in docs:
        info = d.get("info", {})
        peak, base = info.get("peak_rss_bytes"), info.get("baseline_rss_bytes")
        line = f"peak RSS {d['system']:<8} {mib(peak):>11}"
        if peak and base:
            line += f"  (baseline at start {mib(base)}, +{mib(peak - base)})"
        if info.get("anon_rss_bytes"):
            line += f"  anon RSS (max sampled) {mib(info['anon_rss_bytes'])}"
        if info.get("children_peak_rss_bytes"):
            line += f"  largest child process peak {mib(info['children_peak_rss_bytes'])}"
        print(line)
    for d in docs:
        st = d.get("info", {}).get("stats")
        if d["system"] == "yaddb" and st:
            bpk = bytes_per_key(st)
            print(f"yaddb stats after reopen: segments={st.get('segments')} "
                  f"keys_on_disk={st.get('keys_on_disk')} index_bytes={st.get('index_bytes')} "
                  f"bloom_bytes={st.get('bloom_bytes')} key_filter_bytes={st.get('key_filter_bytes')} -> index+blooms {fmt_f(bpk)} B/key "
                  f"(settle {fmt_f(d['info'].get('settle_seconds'))} s)")
    for d in docs:
        if d.get("error"):
            print(f"!! {d['system']}: {d['error']} (figures above may be partial)")


def goal_line(status, text, goals):
    goals.append({"status": status, "goal": text})
    print(f"{status:<5} {text}")


def run_compare(args, scratch, report):
    sizes_docs = {}
    for n in args.keys:
        docs = [run_worker(args, scratch, s, n) for s in args.systems]
        sizes_docs[n] = docs
        print_table(f"{n:,} keys, {VALUE_SIZE}-byte values (yaddb fsync=interval "
                    f"{args.fsync_interval_ms} ms, memtable {args.memtable_bytes:,} B)",
                    ("fillrandom", "readhot", "readrandom", "readmissing", "fillbatch"),
                    args.systems, docs)
        sys.stdout.flush()
    sync_docs = [run_worker(args, scratch, s, "sync") for s in args.systems]
    print_table(f"fillsync: {args.sync_ops:,} durable single puts (yaddb fsync=always, "
                "leveldb sync=True, sqlite synchronous=FULL)", ("fillsync",), args.systems, sync_docs)

    print("\n== Goals (ours with fsync=interval, ratio = ours/LevelDB ops/s) ==")
    goals = report["goals"]
    for n, docs in sizes_docs.items():
        res = index_of(docs)
        for workload, label, target in GOAL_RATIOS:
            ours = res.get((workload, "yaddb"))
            rt = ratio(ours, res.get((workload, "leveldb")))
            text = f"{n:>10,} keys  {label} >= {target}x LevelDB: "
            status = "n/a" if rt is None else ("PASS" if rt >= target else "MISS")
            if rt is not None and wrong_results(ours):  # wrong answers void the figure
                status, text = "MISS", text + f"(wrong results: {wrong_results(ours)}) "
            goal_line(status, text + (f"{rt:.3f}x" if rt is not None else "not measured"), goals)
        st = next((d["info"].get("stats") for d in docs if d["system"] == "yaddb"), None)
        bpk = bytes_per_key(st)
        goal_line("n/a" if bpk is None else ("PASS" if bpk <= GOAL_BYTES_PER_KEY else "MISS"),
                  f"{n:>10,} keys  index+bloom <= {GOAL_BYTES_PER_KEY:g} B/key: "
                  + (f"{bpk:.2f}" if bpk is not None else "not measured"), goals)
    res = index_of(sync_docs)
    ours, sq = res.get(("fillsync", "yaddb")), res.get(("fillsync", "sqlite"))
    rt = ratio(ours, sq)
    goal_line("INFO", "fsync=always vs sqlite synchronous=FULL: " + (
        f"{rt:.2f}x ({fmt_int(ours['ops_per_s'])} vs {fmt_int(sq['ops_per_s'])} ops/s)"
        if rt is not None else "not measured"), goals)
    report["workers"] = [d for docs in sizes_docs.values() for d in docs] + sync_docs


def run_growth(args, scratch, report):
    sizes = args.keys
    docs = [run_worker(args, scratch, "yaddb", n) for n in sizes]
    print(f"\n== growth: yaddb only (fill with write_batch of {args.batch_size}, "
          f"then flush, wait_for_compactions, reopen) ==")
    print(f"{'keys':>11} {'fill ops/s':>11} {'get p50':>9} {'get p99':>9} {'miss p99':>9} "
          f"{'peak RSS':>12} {'anon RSS':>12} {'child RSS':>12} {'idx+bloom B/key':>16} {'segments':>9}")
    p99, wrong = {}, []
    for n, d in zip(sizes, docs):
        res = {r["workload"]: r for r in d["results"]}
        get, miss, fill = res.get("readrandom", {}), res.get("readmissing", {}), res.get("fillbatch", {})
        st = d.get("info", {}).get("stats") or {}
        p99[n] = get.get("p99_us")
        wrong += [f"{n:,}: {w}" for w in (wrong_results(get), wrong_results(miss)) if w]
        info = d.get("info", {})
        print(f"{n:>11,} {fmt_int(fill.get('ops_per_s')):>11} {fmt_f(get.get('p50_us')):>9} "
              f"{fmt_f(get.get('p99_us')):>9} {fmt_f(miss.get('p99_us')):>9} "
              f"{mib(info.get('peak_rss_bytes')):>12} {mib(info.get('anon_rss_bytes')):>12} "
              f"{mib(info.get('children_peak_rss_bytes')):>12} "
              f"{fmt_f(bytes_per_key(st)):>16} {str(st.get('segments', '-')):>9}"
              f"{warnings_of(get)}{warnings_of(miss)}"
              + (f"  !! {d['error']}" if d.get("error") else ""))
    print("\n== Goals ==")
    goals = report["goals"]
    small, large = p99.get(sizes[0]), p99.get(sizes[-1])
    if len(sizes) < 2 or small is None or large is None:
        goal_line("n/a", "get p99 at the largest size <= 2x its value at 100k: not measured", goals)
    else:
        rt = large / small
        goal_line("PASS" if rt <= GOAL_GROWTH_P99 and not wrong else "MISS",
                  f"get p99 at {sizes[-1]:,} <= {GOAL_GROWTH_P99:g}x its value at {sizes[0]:,}: "
                  f"{large:.2f} / {small:.2f} us = {rt:.2f}x"
                  + (f" (wrong results: {'; '.join(wrong)})" if wrong else ""), goals)
    for n, d in zip(sizes, docs):
        bpk = bytes_per_key(d.get("info", {}).get("stats"))
        goal_line("n/a" if bpk is None else ("PASS" if bpk <= GOAL_BYTES_PER_KEY else "MISS"),
                  f"{n:>10,} keys  index+bloom <= {GOAL_BYTES_PER_KEY:g} B/key: "
                  + (f"{bpk:.2f}" if bpk is not None else "not measured"), goals)
    report["workers"] = docs


def check_dependencies(args):
    missing = []
    for mod, hint in (("mmh3", "pip install -r requirements.txt"),
                      ("numpy", "pip install -r requirements.txt")):
        try:
            __import__(mod)
        except ImportError:
            missing.append(f"{mod} is not installed ({hint})")
    if "leveldb" in args.systems:
        try:
            import plyvel  # noqa: F401
        except ImportError:
            missing.append("plyvel is not installed: pip install -r bench/requirements.txt "
                           "(or leave LevelDB out with --systems yaddb,sqlite)")
    if "yaddb" in args.systems:
        try:
            from yaddb.lsm import Engine  # noqa: F401
        except ImportError as e:
            missing.append(f"yaddb.lsm.Engine cannot be imported ({e}); "
                           "leave it out with --systems leveldb,sqlite")
    if missing:
        sys.exit("bench_engine: " + "\n bench_engine: ".join(missing))


def parse_count(text):
    text = text.strip().lower().replace("_", "")
    mult = {"k": 10**3, "m": 10**6}.get(text[-1:], 1)
    return int(float(text[:-1]) * mult) if mult > 1 else int(text)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--keys", default="100000,1000000",
                   help="comma-separated database sizes (suffixes k/M allowed)")
    p.add_argument("--systems", default=",".join(SYSTEMS), help="subset of yaddb,leveldb,sqlite")
    p.add_argument("--dir", help="scratch directory (default: a temporary one, removed at the end)")
    p.add_argument("--keep", action="store_true", help="keep database files in --dir")
    p.add_argument("--json", metavar="FILE", help="also write all results to FILE")
    p.add_argument("--max-ops", type=parse_count, default=200_000, help="bound for read loops")
    p.add_argument("--sync-ops", type=parse_count, default=2000, help="puts in fillsync")
    p.add_argument("--hot-keys", type=parse_count, default=4000,
                   help="fresh keys written into the memtable for readhot")
    p.add_argument("--batch-size", type=parse_count, default=1000, help="keys per batch in fillbatch")
    p.add_argument("--memtable-bytes", type=parse_count, default=1 << 20)
    p.add_argument("--fsync-interval-ms", type=int, default=1000)
    p.add_argument("--leveldb-bloom-bits", type=int, default=10,
                   help="LevelDB bloom filter bits/key: 10, as ours, by default; 0 = none (plyvel default)")
    p.add_argument("--seed", type=int, default=20240601)
    p.add_argument("--growth", action="store_true",
                   help="only our engine, at 100k, 1M (... up to --growth-max) keys")
    p.add_argument("--growth-max", type=parse_count, default=1_000_000)
    p.add_argument("--worker-timeout", type=float, default=3600,
                   help="seconds before a worker is killed (0 = no limit)")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    p.add_argument("--worker-out", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        return args
    args.keys = [parse_count(k) for k in args.keys.split(",") if k.strip()]
    args.systems = [s.strip() for s in args.systems.split(",") if s.strip()]
    if args.growth:
        args.systems = ["yaddb"]
    unknown = set(args.systems) - set(SYSTEMS)
    if unknown or not args.systems:
        p.error(f"--systems: unknown {sorted(unknown)}; choose from {','.join(SYSTEMS)}")
    if args.growth and args.growth_max < GROWTH_SIZES[0]:
        p.error(f"--growth-max must be >= {GROWTH_SIZES[0]}")
    return args


def main(argv=None):
    args = parse_args(argv)
    if args.worker:
        return worker_main(args)
    check_dependencies(args)
    own_scratch = args.dir is None
    scratch = tempfile.mkdtemp(prefix="yaddb-bench-") if own_scratch else args.dir
    os.makedirs(scratch, exist_ok=True)
    if args.growth:
        args.keys = [s for s in GROWTH_SIZES if s <= args.growth_max]
    report = {"mode": "growth" if args.growth else "compare", "goals": [],
              "config": {k: getattr(args, k) for k in
                         ("keys", "systems", "growth_max") + FORWARDED}}
    try:
        (run_growth if args.growth else run_compare)(args, scratch, report)
    finally:
        if own_scratch:
            shutil.rmtree(scratch, ignore_errors=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
