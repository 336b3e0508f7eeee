#!/usr/bin/env python3
"""Where a get's time goes: open a database that bench_engine.py filled (kept with --keep --dir)
and time random gets of its keys, as its readrandom does, with the minor page faults they cause.

    python3 bench/engine_probe.py DIR/yaddb-10000000/growth 10000000 [--profile] [--repeat 2]

--profile runs the gets under cProfile and prints the top functions; --repeat times the same
keys again (warm page tables), to tell first-touch costs from the rest.
"""
import argparse
import cProfile
import pstats
import resource
import sys
from time import perf_counter

from engine_stores import Data
from engine_workloads import timed_gets
from common import percentiles


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("dir")
    p.add_argument("keys", type=int, help="how many keys the database holds (keys 0..n-1)")
    p.add_argument("--ops", type=int, default=200_000)
    p.add_argument("--seed", type=int, default=20240601)
    p.add_argument("--repeat", type=int, default=1)
    p.add_argument("--profile", action="store_true")
    p.add_argument("--leveldb", action="store_true", help="the directory is a LevelDB one")
    args = p.parse_args(argv)
    data = Data(args.seed)
    idx = data.rng(f"readrandom/{args.keys}").sample(range(args.keys), min(args.ops, args.keys))
    keys = [data.key(i) for i in idx]
    t0 = perf_counter()
    if args.leveldb:
        import plyvel
        db = plyvel.DB(args.dir, bloom_filter_bits=10)
        get, close = db.get, db.close
    else:
        from yaddb.lsm import Engine
        eng = Engine(args.dir, fsync="interval")
        eng.wait_for_compactions()  # e.g. a key filter built at open
        get, close = eng.get, eng.close
        print("segments", eng.stats()["segments"], [s.entries for s in eng._versions.view[2]])
    print(f"open {perf_counter() - t0:.2f} s")
    for run in range(args.repeat):
        faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        prof = cProfile.Profile() if args.profile else None
        if prof:
            prof.enable()
        elapsed, lat, found = timed_gets(get, keys)
        if prof:
            prof.disable()
        faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults
        p50, p90, p99, p999 = (x / 1000 for x in percentiles(lat, 0.5, 0.9, 0.99, 0.999))
        print(f"run {run}: {len(keys) / (elapsed / 1e9):,.0f} gets/s  p50 {p50:.2f}  p90 {p90:.2f}"
              f"  p99 {p99:.2f}  p99.9 {p999:.2f} us  found {found}/{len(keys)}  "
              f"minor faults {faults:,} ({faults / len(keys):.3f}/get)")
        if prof:
            pstats.Stats(prof).sort_stats("tottime").print_stats(12)
    close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
