#!/usr/bin/env python3
"""Benchmark yaddb.lsm.Engine against LevelDB (plyvel) and sqlite3 (WAL).

One run measures every selected system on the same keys and values and prints
throughput, per-op latency (p50/p99) and the ratio to LevelDB, then checks the
performance goals of the storage engine.

Every (system, size) phase runs in its own subprocess (this script re-invoked
with the hidden ``--worker system,size`` argument, see engine_worker.py), so the
peak RSS reported for a system is that system's own.

This is a benchmark, not a test: it only reports figures.  See bench/README.md.
"""
import argparse
import json
import os
import shutil
import sys
import tempfile

from common import run_to_end
from engine_report import print_compare_goals, print_growth, print_results
from engine_stores import VALUE_SIZE
from engine_worker import log, worker_main

SYSTEMS = ("yaddb", "leveldb", "sqlite")
GROWTH_SIZES = (100_000, 1_000_000, 10_000_000)
FORWARDED = ("seed", "max_ops", "sync_ops", "hot_keys", "batch_size",
             "memtable_bytes", "fsync_interval_ms", "leveldb_bloom_bits")


def run_worker(args, scratch, system, what):
    """Run one phase in a subprocess; return its document (maybe partial)."""
    name = f"{system}-{what}"
    workdir, out = os.path.join(scratch, name), os.path.join(scratch, name + ".json")
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", f"{system},{what}",
           "--worker-out", out, "--dir", workdir]
    for option in FORWARDED:
        cmd += ["--" + option.replace("_", "-"), str(getattr(args, option))]
    if args.growth:
        cmd.append("--growth")
    log(f"--- {system}, {what} ---")
    code, _ = run_to_end(name, cmd, scratch, ours=True, timeout=args.worker_timeout or None,
                         echo=True)
    error = None
    if code is None:
        error = f"worker killed after {args.worker_timeout} s"
    elif code != 0:
        error = f"worker exited with code {code}"
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
        os.remove(os.path.join(scratch, name + ".log"))
    return doc


def run_compare(args, scratch, report):
    sizes_docs = {}
    for n in args.keys:
        docs = [run_worker(args, scratch, s, n) for s in args.systems]
        sizes_docs[n] = docs
        print_results(f"{n:,} keys, {VALUE_SIZE}-byte values (yaddb fsync=interval "
                      f"{args.fsync_interval_ms} ms, memtable {args.memtable_bytes:,} B)",
                      ("fillrandom", "readhot", "readrandom", "readmissing", "fillbatch"),
                      args.systems, docs)
        sys.stdout.flush()
    sync_docs = [run_worker(args, scratch, s, "sync") for s in args.systems]
    print_results(f"fillsync: {args.sync_ops:,} durable single puts (yaddb fsync=always, "
                  "leveldb sync=True, sqlite synchronous=FULL)", ("fillsync",), args.systems,
                  sync_docs)
    print_compare_goals(sizes_docs, sync_docs, report["goals"])
    report["workers"] = [d for docs in sizes_docs.values() for d in docs] + sync_docs


def run_growth(args, scratch, report):
    """Our engine at every size; LevelDB, the same fill and workloads, at the sizes
    --growth-leveldb names (by default the largest only, for the disk-gets goal)."""
    docs = [run_worker(args, scratch, "yaddb", n) for n in args.keys]
    theirs_at = {"all": args.keys, "largest": args.keys[-1:], "none": []}[args.growth_leveldb]
    theirs = {n: run_worker(args, scratch, "leveldb", n) for n in theirs_at}
    print_growth(args.keys, docs, theirs, args.batch_size, report["goals"])
    report["workers"] = docs + list(theirs.values())


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
                   help="our engine at 100k, 1M (... up to --growth-max) keys; LevelDB as "
                        "--growth-leveldb says")
    p.add_argument("--growth-max", type=parse_count, default=1_000_000)
    p.add_argument("--growth-leveldb", choices=("largest", "all", "none"), default="largest",
                   help="growth mode: the sizes LevelDB runs at too (same fill, reopen, reads)")
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
        args.systems = ["yaddb"] + (["leveldb"] if args.growth_leveldb != "none" else [])
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
    # absolute: the workers run in the scratch directory
    scratch = tempfile.mkdtemp(prefix="yaddb-bench-") if own_scratch else os.path.abspath(args.dir)
    os.makedirs(scratch, exist_ok=True)
    if args.growth:
        args.keys = [s for s in GROWTH_SIZES if s <= args.growth_max]
    report = {"mode": "growth" if args.growth else "compare", "goals": [],
              "config": {k: getattr(args, k) for k in
                         ("keys", "systems", "growth_max", "growth_leveldb") + FORWARDED}}
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
