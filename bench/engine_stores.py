"""bench_engine's data and systems: the keys and values every system gets, and one thin adapter
per system (our engine, LevelDB through plyvel, sqlite3 in WAL mode)."""
import functools
import os
import random
import time
import zlib

VALUE_SIZE = 100


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
        np.random.default_rng([self.seed, zlib.crc32(tag.encode())]).shuffle(order)
        return order


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

    SETTLE_TIMEOUT_S = 300
    settle_note = None  # set when settle gave up waiting

    def settle(self):
        """Wait until LevelDB needs no compaction, as ours waits for its merges: LevelDB has
        no call for that, so poll its 'leveldb.stats' table until level 0 holds fewer files
        than its compaction trigger (4) and every other level L is at most 10^L MiB (sizes
        there are rounded to a MiB: a level just over its limit may still be compacting)."""
        deadline = time.monotonic() + self.SETTLE_TIMEOUT_S
        while self.compaction_due():
            if time.monotonic() > deadline:
                self.settle_note = f"compactions still due after {self.SETTLE_TIMEOUT_S} s"
                return
            time.sleep(0.5)

    def compaction_due(self):
        for line in self.db.get_property(b"leveldb.stats").decode().splitlines():
            cells = line.split()  # Level Files Size(MB) Time(sec) Read(MB) Write(MB)
            if len(cells) == 6 and cells[0].isdigit():
                level, files, size_mb = int(cells[0]), int(cells[1]), float(cells[2])
                if files >= 4 if level == 0 else size_mb > 10 ** level:
                    return True
        return False

    def stats(self):
        """The levels' file counts (LevelDB's own 'leveldb.num-files-at-levelN')."""
        counts = [int(self.db.get_property(b"leveldb.num-files-at-level%d" % level) or 0)
                  for level in range(7)]
        note = {"note": self.settle_note} if self.settle_note else {}
        return {"files_per_level": counts, "tables": sum(counts), **note}

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
