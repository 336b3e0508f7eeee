"""The storage engine: a crash-safe LSM tree of bytes keys and bytes values.

Writes go to the write-ahead log, then the memtable; a full memtable is frozen and flushed to a
segment by a background thread while a new one takes writes. Segments are merged by size-tiered
compaction in a worker process (or thread), so merging does not hold this process's GIL.
Reads look in the memtable, the frozen memtables, then segments newest first, each one only if
its bloom filter says the key may be there.
"""
from __future__ import annotations

import logging
import os
import threading
from typing import Iterable, Iterator, Optional

from yaddb.errors import EngineClosed, InvalidKey, StorageError, ValueTooLarge
from yaddb.limits import DEFAULT_MAX_VALUE_BYTES, FSYNC_POLICIES, MAX_KEY_BYTES, check_key
from yaddb.lsm import files, key_filter as key_filters, wal_format
from yaddb.lsm.maintenance import COMPACTION_MODES, Maintenance
from yaddb.lsm.memtable import Memtable
from yaddb.lsm.sstable import DEFAULT_BITS_PER_KEY, DEFAULT_BLOCK_BYTES
from yaddb.lsm.recovery import recover_directory
from yaddb.lsm.batch import WriteBatch
from yaddb.lsm.version import VersionSet, find_in_segments
from yaddb.lsm.snapshot import Snapshot, from_key
from yaddb.lsm.wal import WalWriter, open_logs, read_logs

log = logging.getLogger(__name__)

DEFAULT_MEMTABLE_BYTES = 1 << 20
MAX_FROZEN_MEMTABLES = 2  # writers wait when flushing falls this far behind


class Engine:
    """Open (or create) the database in directory `path`.

    fsync: "always" (fsync before a write returns; concurrent writers share one fsync),
    "interval" (fsync at most every fsync_interval_ms), or "never" (leave it to the OS).
    compaction: "process" (a worker process merges segments), "thread", or "manual" (only
    `compact()` merges). max_segments: past it the smallest adjacent pair merges. A get of a
    present key probes the filter of every segment newer than the one holding it, so this
    bounds a get's cost: 8 rather than 12 costs more merging while a big load goes on.
    """

    def __init__(self, path: str, *, fsync: str = "always", fsync_interval_ms: int = 1000,
                 memtable_bytes: int = DEFAULT_MEMTABLE_BYTES,
                 max_value_bytes: int = DEFAULT_MAX_VALUE_BYTES,
                 block_bytes: int = DEFAULT_BLOCK_BYTES,
                 bits_per_key: float = DEFAULT_BITS_PER_KEY,
                 compaction: str = "process", compaction_fanout: int = 3,
                 max_segments: int = 8) -> None:
        if fsync not in FSYNC_POLICIES:
            raise ValueError(f"fsync must be one of {', '.join(FSYNC_POLICIES)}, not {fsync!r}")
        if compaction not in COMPACTION_MODES:
            raise ValueError(f"compaction must be one of {', '.join(COMPACTION_MODES)}, "
                             f"not {compaction!r}")
        self.path = path
        self.fsync = fsync
        self.memtable_bytes = memtable_bytes
        self.max_value_bytes = max_value_bytes
        self.block_bytes = block_bytes
        self.bits_per_key = bits_per_key
        self._write_lock = threading.Lock()
        self._failure: Optional[BaseException] = None
        self._fsyncs = [0]  # log fsyncs so far, counted by every WalWriter of this engine
        os.makedirs(path, exist_ok=True)
        self._dir_lock = files.DirLock(path)
        try:
            self._open()
        except BaseException:
            self._dir_lock.release()
            raise
        self._maintenance = Maintenance(
            self._versions, compaction, compaction_fanout, max_segments,
            memtable_bytes=memtable_bytes, block_bytes=block_bytes, bits_per_key=bits_per_key,
            on_failure=self.fail)
        self._syncer: Optional[threading.Thread] = None
        self._stop_syncer = threading.Event()
        if fsync == "interval":
            self._syncer = threading.Thread(target=self._sync_periodically, name="yaddb-wal-sync",
                                            args=(fsync_interval_ms / 1000.0,), daemon=True)
            self._syncer.start()
        if self._versions.view[0].approx_bytes >= memtable_bytes:
            with self._write_lock:
                self._rotate()

    # ---- opening -------------------------------------------------------------------------

    def _open(self) -> None:
        recovered = recover_directory(self.path)
        self._seq = recovered.seq
        self._versions = VersionSet(self.path, recovered,
                                    key_filters.take(self.path, recovered.manifest.segments))
        self._wal = self._new_wal()
        recovered.memtable.wal_numbers.append(self._wal.number)

    @property
    def key_filter(self) -> Optional[key_filters.KeyFilter]:
        """The filter of every key on disk (None while none is built)."""
        return self._versions.key_filter

    def _new_wal(self) -> WalWriter:
        number = self._versions.allocate_file_number()
        return WalWriter(os.path.join(self.path, files.wal_name(number)), number, self._fsyncs)

    # ---- reads ---------------------------------------------------------------------------

    def get(self, key: bytes) -> Optional[bytes]:
        """The value stored under key, or None."""
        versions = self._versions
        view = versions.view
        if view is None:
            raise EngineClosed(f"the engine at {self.path} is closed")
        if type(key) is not bytes or not 0 < len(key) <= MAX_KEY_BYTES:
            key = check_key(key)
        mem, frozen, segments = view
        node = mem.nodes.get(key)
        if node is not None:
            return node.value
        for table in frozen:
            node = table.nodes.get(key)
            if node is not None:
                return node.value
        return find_in_segments(segments, versions.key_filter, key) if segments else None

    def snapshot(self) -> Snapshot:
        """A consistent view of every live item as of the current sequence number."""
        with self._write_lock:
            mem, frozen, segments = self._versions.current()
            seq = self._seq
            mem_items = list(mem.items())
        sources = [lambda start: from_key(mem_items, start)]
        sources += [lambda start, t=table: from_key(t.items(), start) for table in frozen]
        sources += [lambda start, s=segment: s.items(start) for segment in segments]
        return Snapshot(seq, sources)

    def items(self, start: Optional[bytes] = None,
              stop: Optional[bytes] = None) -> Iterator[tuple[bytes, bytes]]:
        """Every live (key, value) in key order, as of the call."""
        return self.snapshot().items(start, stop)

    def writes_since(self, seq: int) -> Optional[list[tuple[int, bytes, Optional[bytes]]]]:
        """Every write numbered above `seq`, oldest first, as (seq, key, value or None for a
        delete), read from the logs this engine still holds. None when a write above `seq`
        may be in a segment only (a flush moved it there and deleted its log): the answer
        would not be exact. Numbers may skip (a slave numbers writes as its master does)."""
        if type(seq) is not int or seq < 0:
            raise ValueError(f"seq must be an int >= 0, not {seq!r}")
        with self._write_lock:
            # Under the lock no write or rotation moves the set of logs or their ends, so
            # the files match `last`. A flush may still delete a frozen table's log (it does
            # not take this lock), but an open file stays readable after its unlink, and a
            # log deleted before it was opened has its segment in the view by then.
            mem, frozen, _ = self._versions.current()
            last, current, end = self._seq, self._wal.number, self._wal.written
            if seq >= last:
                return []
            numbers = [n for table in (*reversed(frozen), mem) for n in table.wal_numbers]
            opened = open_logs(self.path, numbers)
            flushed_past = any(segment.max_seq > seq for segment in self._versions.current()[2])
        batches = read_logs(opened, {current: end})
        if batches is None or flushed_past:
            return None
        return [(batch.first_seq + offset, key, value) for batch in batches
                for offset, (key, value) in enumerate(batch.entries)
                if batch.first_seq + offset > seq]

    @property
    def sequence(self) -> int:
        """The sequence number of the latest write; writes are numbered 1, 2, 3, ..."""
        return self._seq

    # ---- writes --------------------------------------------------------------------------

    def put(self, key: bytes, value: bytes) -> int:
        """Store value under key; returns the write's sequence number once it is durable."""
        if type(key) is not bytes or not 0 < len(key) <= MAX_KEY_BYTES:
            key = check_key(key)
        if type(value) is not bytes or len(value) > self.max_value_bytes:
            value = self._checked_value(value)
        # _commit's steps for one entry, inlined: this is the hottest path of the engine.
        with self._write_lock:
            view = self._versions.view
            if self._failure is not None or view is None:
                self._writable()  # raises the reason
            mem = view[0]
            wal = self._wal
            seq = self._seq + 1
            try:
                end = wal.append(wal_format.encode_single(seq, key, value))
            except OSError as exc:
                self._append_failed(wal, exc)
            mem.put(key, value, seq)
            self._seq = seq
            if mem.approx_bytes >= self.memtable_bytes:
                self._rotate()
        if self.fsync == "always":
            self._sync(wal, end)
        return seq

    def delete(self, key: bytes) -> int:
        """Delete key (a tombstone; deleting an absent key is harmless)."""
        return self._commit([(check_key(key), None)])

    def write_batch(self, ops: Iterable[tuple[bytes, Optional[bytes]]], sync: bool = True,
                    first_seq: Optional[int] = None) -> int:
        """Apply (key, value) pairs, value None meaning delete, atomically; returns the last seq.

        With sync=False the batch is in the OS (safe from a process crash) but not fsynced
        even under fsync="always": the caller calls sync() before acknowledging it. A server
        uses this to cover many requests with one fsync. `first_seq`, when above the latest
        sequence number, numbers the batch from there (a slave numbering writes as its master
        does); otherwise the batch takes the next numbers.
        """
        checked = [(check_key(key), None if value is None else self._checked_value(value))
                   for key, value in ops]
        return self._commit(checked, sync, first_seq) if checked else self._seq

    def advance_sequence(self, seq: int) -> None:
        """Number the next write seq + 1 if that is above the latest (a slave loaded as of its
        master's `seq`, or a promoted slave going on from its master's numbering). Made
        durable by that next write; a restart before it only forgets the jump."""
        with self._write_lock:
            self._seq = max(self._seq, seq)

    def sync(self, force: bool = False) -> None:
        """Under fsync="always", or with force under any policy, return once every write so
        far is on stable storage."""
        if force or self.fsync == "always":
            with self._write_lock:
                self._writable()
            try:
                self._sync_logs()
            except EngineClosed as exc:
                self._failure = exc
                raise

    def _sync_logs(self) -> None:
        """Sync every log that may hold unsynced writes, the oldest first, so a power cut
        never keeps newer writes and loses older ones. Any thread may call it: the current log
        is read before the frozen ones, and _rotate publishes the view that lists the log it
        froze before it makes a new log current, so a switch in between cannot hide the
        frozen log. No lock: close() holds the write lock while it waits for the periodic
        syncer."""
        wal = self._wal
        view = self._versions.view
        for table in reversed(view[1] if view else ()):
            table.wal.sync()
        wal.sync()

    def batch(self) -> WriteBatch:
        """`with engine.batch() as b: b.put(...); b.delete(...)` applies all of it on exit."""
        return WriteBatch(self.write_batch)

    def _commit(self, entries: list[tuple[bytes, Optional[bytes]]], sync: bool = True,
                first_seq: Optional[int] = None) -> int:
        with self._write_lock:
            mem, wal = self._writable()
            first = self._seq + 1 if first_seq is None else max(self._seq + 1, first_seq)
            record = (wal_format.encode_single(first, *entries[0]) if len(entries) == 1
                      else wal_format.encode_batch(first, entries))
            try:
                end = wal.append(record)
            except OSError as exc:
                self._append_failed(wal, exc)
            for offset, (key, value) in enumerate(entries):
                mem.put(key, value, first + offset)
            self._seq = last = first + len(entries) - 1
            if mem.approx_bytes >= self.memtable_bytes:
                self._rotate()
        if sync and self.fsync == "always":
            self._sync(wal, end)
        return last

    def _writable(self) -> tuple[Memtable, WalWriter]:
        view = self._versions.view
        if view is None or self._failure is not None:
            if view is None:
                raise EngineClosed(f"the engine at {self.path} is closed")
            raise EngineClosed(f"the engine at {self.path} stopped taking writes after an "
                               f"I/O error: {self._failure}. Restart it to recover from its log.")
        return view[0], self._wal

    def _append_failed(self, wal: WalWriter, exc: OSError) -> None:
        # A partial record may now end the log; nothing may be appended after it.
        self._failure = exc
        raise StorageError(f"writing the log {wal.path} failed: {exc}") from exc

    def _sync(self, wal: WalWriter, end: int) -> None:
        try:
            wal.sync_to(end)
        except EngineClosed as exc:
            self._failure = exc
            raise

    def _rotate(self) -> None:
        """Freeze the memtable and start a new one with a new log. Holds the write lock."""
        versions = self._versions
        versions.wait_for_room(MAX_FROZEN_MEMTABLES, lambda: self._failure is not None)
        # The frozen table keeps its log open: the flush syncs and closes it off this path.
        versions.view[0].wal = self._wal
        wal = self._new_wal()
        fresh = Memtable()
        fresh.wal_numbers.append(wal.number)
        versions.freeze(fresh)
        self._wal = wal  # after the view that lists the old log as frozen (_sync_logs)

    def flush(self, wait: bool = True) -> None:
        """Move the memtable into a segment now (normally done when it reaches its size)."""
        with self._write_lock:
            if len(self._versions.current()[0]):
                self._rotate()
        if wait:
            self._maintenance.wait_idle(flushes_only=True)

    def compact(self) -> None:
        """Merge every segment into one, dropping overwritten values and tombstones."""
        self.flush(wait=True)
        self._maintenance.compact_all()
        if self._maintenance.compaction_error:
            raise StorageError(f"compaction failed: {self._maintenance.compaction_error}")

    def wait_for_compactions(self, timeout: Optional[float] = None) -> bool:
        """Block until no flush or compaction is pending; False if the timeout passed first."""
        return self._maintenance.wait_idle(timeout=timeout)

    # ---- helpers, stats and shutdown -----------------------------------------------------

    def _checked_value(self, value: object) -> bytes:
        if isinstance(value, (bytearray, memoryview)):
            value = bytes(value)
        if type(value) is not bytes:
            raise InvalidKey(f"a value must be bytes, not {type(value).__name__}")
        if len(value) > self.max_value_bytes:
            raise ValueTooLarge(f"the value is {len(value)} bytes; the limit is "
                                f"{self.max_value_bytes} (set max_value_bytes to raise it)")
        return value

    def _sync_periodically(self, interval: float) -> None:
        while not self._stop_syncer.wait(interval):
            try:
                self._sync_logs()
            except EngineClosed as exc:
                self._failure = exc
                log.error("%s", exc)
                return

    def fail(self, exc: BaseException) -> None:
        """Stop taking writes after a background I/O error."""
        with self._versions.changed:
            self._failure = exc
            self._versions.changed.notify_all()

    def keys_estimate(self) -> int:
        """Keys held, counting versions not yet merged away (overwritten or deleted) too."""
        return self._versions.keys_estimate()

    def stats(self) -> dict:
        return {"sequence": self._seq, "fsync": self.fsync, "log_fsyncs": self._fsyncs[0],
                **self._versions.stats(), **self._maintenance.counters(),
                "failed": None if self._failure is None else str(self._failure)}

    def close(self) -> None:
        """Flush the memtable, finish background work, sync and release the directory."""
        with self._write_lock:
            view = self._versions.view
            if view is None:
                return
            if self._failure is None and len(view[0]):
                self._rotate()
            self._maintenance.stop()
            self._stop_syncer.set()
            if self._syncer is not None:
                self._syncer.join()
            self._wal.close(sync=self._failure is None)
            for segment in self._versions.close():
                segment.close()
            self._dir_lock.release()

    def __enter__(self) -> "Engine":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.close()
