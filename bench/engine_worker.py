"""bench_engine's worker: one (system, size) phase in a process of its own, so the peak RSS it
reports is that system's own. It writes its results to a JSON file after every workload, so
a worker that dies or is killed still leaves what it measured."""
import json
import os
import resource
import shutil
import sys
from time import perf_counter_ns

from common import child_pids, exit_with_parent
from engine_stores import STORES, Data
from engine_workloads import (w_fillbatch, w_fillrandom, w_fillsync, w_readhot, w_readmissing,
                              w_readrandom)


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def peak_rss_bytes():
    r = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return r if sys.platform == "darwin" else r * 1024


def status_bytes(pid, field):
    """A size field of /proc/PID/status ("VmHWM", "RssAnon") in bytes; None if unreadable."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
    except (OSError, IndexError, ValueError):
        pass
    return None


def children_peak_rss_bytes():
    """Largest peak RSS (VmHWM) among live child processes, e.g. the engine's
    compaction worker (Linux only; None elsewhere).  RUSAGE_CHILDREN is not
    used: after fork/vfork+exec it also counts the parent's RSS at spawn."""
    peaks = [status_bytes(pid, "VmHWM") for pid in child_pids(os.getpid())]
    return max((peak for peak in peaks if peak is not None), default=None)


def anon_rss_bytes():
    """Current anonymous RSS (Linux only): excludes mmap'ed file pages, which
    LevelDB's table reads add to the peak RSS."""
    return status_bytes("self", "RssAnon")


class Recorder:
    def __init__(self, out_path, system, size):
        self.out_path = out_path
        self.doc = {"system": system, "size": size, "results": [], "info": {}}

    def add(self, r):
        r["system"], r["size"] = self.doc["system"], self.doc["size"]
        self.doc["results"].append(r)
        log(f"[{r['system']} {r['size']}] {r['workload']}: {r['ops_per_s'] or 0:,.0f} ops/s")
        self.save()

    def info(self, **kw):
        self.doc["info"].update(kw)
        self.save()

    def save(self):
        info = self.doc["info"]
        info["peak_rss_bytes"] = peak_rss_bytes()
        child = children_peak_rss_bytes()  # sampled while the store is open
        if child is not None:
            info["children_peak_rss_bytes"] = max(child, info.get("children_peak_rss_bytes", 0))
        anon = anon_rss_bytes()  # sampled after each workload; keep the largest
        if anon is not None:
            info["anon_rss_bytes"] = max(anon, info.get("anon_rss_bytes", 0))
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


def open_store(system, args, name, durable=False):
    store = STORES[system](os.path.join(args.dir, name), args, durable=durable)
    store.open()
    return store


def worker_compare(system, n, data, args, rec):
    store = open_store(system, args, "main")
    rec.add(w_fillrandom(store, data, n, args))
    rec.add(w_readhot(store, data, n, args))
    settle_and_reopen(store, rec)
    rec.add(w_readrandom(store, data, n, args))
    rec.add(w_readmissing(store, data, n, args))
    store.close()
    shutil.rmtree(store.path, ignore_errors=True)

    store = open_store(system, args, "batch")
    rec.add(w_fillbatch(store, data, n, args))
    store.close()


def worker_growth(system, n, data, args, rec):
    store = open_store(system, args, "growth")
    rec.add(w_fillbatch(store, data, n, args))
    settle_and_reopen(store, rec)
    rec.add(w_readrandom(store, data, n, args))
    rec.add(w_readmissing(store, data, n, args))
    rec.info(stats=store.stats())
    store.close()


def worker_sync(system, data, args, rec):
    store = open_store(system, args, "sync", durable=True)
    rec.add(w_fillsync(store, data, args.sync_ops, args))
    store.close()


def worker_main(args):
    """The hidden `--worker system,size` mode of bench_engine.py."""
    exit_with_parent()
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
