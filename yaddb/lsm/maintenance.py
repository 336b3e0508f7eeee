"""Background work of the engine: flushing frozen memtables and scheduling compactions.

One thread does all of it, so the manifest has a single writer. Merges run in an executor (a
worker process by default) and are installed by this thread when they finish. What the engine
is made of changes only through the VersionSet's install_* methods.
"""
from __future__ import annotations

import logging
import os
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Callable, Optional

import numpy as np

from yaddb.durable import remove_if_present
from yaddb.lsm import files, key_filter as key_filters
from yaddb.lsm.bloom import BloomFilter, hash_arrays
from yaddb.lsm.compaction import compact_files, pick_run
from yaddb.lsm.memtable import Memtable
from yaddb.lsm.sstable import Segment, write_segment
from yaddb.lsm.version import VersionSet
from yaddb.lsm.worker import WorkerProcess

log = logging.getLogger(__name__)

COMPACTION_MODES = ("process", "thread", "manual")


@dataclass
class _Merge:
    inputs: tuple[Segment, ...]
    number: int
    future: Future
    everything: bool  # asked for by compact(): merge all segments


class Maintenance:
    def __init__(self, versions: VersionSet, mode: str, fanout: int, max_segments: int, *,
                 memtable_bytes: int, block_bytes: int, bits_per_key: float,
                 on_failure: Callable[[BaseException], None]) -> None:
        """on_failure(exc) is called once a flush fails: the engine stops taking writes."""
        self._versions = versions
        self._path = versions.path
        self._cond = versions.changed
        self._memtable_bytes = memtable_bytes
        self._block_bytes = block_bytes
        self._bits_per_key = bits_per_key
        self._on_failure = on_failure
        self._mode = mode
        self._fanout = fanout
        self._max_segments = max_segments
        # One merge at a time; in "process" mode this thread only waits on the worker process.
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="yaddb-compaction")
        # Two workers, so a long merge never holds up a flush (and so the writers).
        self._flusher = WorkerProcess() if mode == "process" else None
        self._merger = WorkerProcess() if mode == "process" else None
        self.compaction_error: Optional[str] = None
        self._merge: Optional[_Merge] = None
        self._compact_all = False
        self._stopping = False
        self._broken = False
        self._flushes = 0
        self._compactions = 0
        self._filter_build: Optional[Future] = None
        self._filter_pending: list = []   # hashes of keys flushed while a build runs
        self._deferred: list[str] = []    # merged-away files a running build may still read
        self.filter_error: Optional[str] = None
        segments = versions.view[2]
        if versions.key_filter is None:
            if segments:
                self._start_filter_build(segments)
            else:
                capacity = key_filters.MIN_CAPACITY
                empty = BloomFilter.from_hashes(*hash_arrays([]), bits_per_key, capacity)
                versions.install_key_filter(key_filters.KeyFilter(empty, capacity, 0))
        self._thread = threading.Thread(target=self._loop, name="yaddb-maintenance", daemon=True)
        self._thread.start()

    # ---- called by the engine ------------------------------------------------------------

    def counters(self) -> dict:
        return {"flushes": self._flushes, "compactions": self._compactions,
                "compaction_running": self._merge is not None,
                "compaction_error": self.compaction_error,
                "key_filter_building": self._filter_build is not None,
                "key_filter_error": self.filter_error}

    def wait_idle(self, timeout: Optional[float] = None, flushes_only: bool = False) -> bool:
        def idle() -> bool:
            view = self._versions.view
            if self._broken or view is None:
                return True
            if flushes_only:
                return not view[1]
            return (not view[1] and self._merge is None and self._filter_build is None
                    and not self._filter_wanted() and self._next_run(view[2]) is None)
        with self._cond:
            return self._cond.wait_for(idle, timeout)

    def compact_all(self) -> None:
        with self._cond:
            self._compact_all = True
            self._cond.notify_all()
            self._cond.wait_for(lambda: not self._compact_all or self._broken)

    def stop(self) -> None:
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        self._thread.join()
        self._executor.shutdown(wait=True)
        for worker in (self._flusher, self._merger):
            if worker is not None:
                worker.close()
        for path in self._deferred:
            remove_if_present(path)
        versions = self._versions
        if versions.key_filter is not None and not self._broken:
            key_filters.save(self._path, versions.manifest.segments, versions.key_filter)

    # ---- the loop ------------------------------------------------------------------------

    def _next_run(self, segments: tuple[Segment, ...]) -> Optional[tuple[int, int]]:
        if self._compact_all:
            if len(segments) > 1 or (segments and segments[0].tombstones):
                return 0, len(segments)
            self._compact_all = False  # nothing to merge: the request is already met
            self._cond.notify_all()
            return None
        if self._mode == "manual" or self._stopping or self.compaction_error:
            return None
        return pick_run([s.size for s in segments], self._memtable_bytes,
                        self._fanout, self._max_segments)

    def _has_work(self) -> bool:
        if self._broken:
            return self._stopping
        view = self._versions.view
        if view[1] or (self._filter_build is not None and self._filter_build.done()):
            return True
        if self._filter_wanted():
            return True
        if self._merge is not None:
            return self._merge.future.done()
        return self._stopping or self._next_run(view[2]) is not None

    def _loop(self) -> None:
        while True:
            with self._cond:
                self._cond.wait_for(self._has_work)
                if self._broken:
                    return
            try:
                if not self._step():
                    return
            except Exception as exc:
                log.exception("%s: background flush or compaction failed; the engine stops "
                              "taking writes", self._path)
                with self._cond:
                    self._broken = True
                self._on_failure(exc)

    def _step(self) -> bool:
        """Do everything that is ready; False once stopping has nothing left to finish.

        A merge is started even while tables wait to be flushed: flushes and merges run in
        different workers, and under a steady write load there is always a table waiting.
        """
        versions = self._versions
        if self._filter_build is not None and self._filter_build.done():
            self._install_filter()
        if self._merge is not None and self._merge.future.done():
            self._install(self._merge)
        frozen = versions.view[1]
        if frozen:
            self._flush(frozen[-1])
        if self._merge is None:
            with self._cond:
                segments = versions.view[2]
                run = self._next_run(segments)
            if run is not None:
                self._start(segments, run)
        if self._filter_wanted():
            self._start_filter_build(versions.view[2])
        return not (self._stopping and not versions.view[1] and self._merge is None)

    def _flush(self, table: Memtable) -> None:
        versions = self._versions
        # Synced under every policy, as close() does: a closed log left unsynced would make a
        # concurrent sync(force=True) fdatasync a closed descriptor (ValueError) and break
        # its promise that every write so far is on stable storage.
        table.wal.close(sync=True)
        number = versions.allocate_file_number()
        path = os.path.join(self._path, files.segment_name(number))
        if self._flusher is not None:
            keys, values = table.columns()
            info = self._flusher.write(path, keys, values, table.last_seq, self._block_bytes,
                                       self._bits_per_key)
        else:
            info = write_segment(path, table.items(), table.last_seq, self._block_bytes,
                                 self._bits_per_key)
        segment = Segment(path, number)
        # Into the key filter before the table leaves the view, so no reader ever misses them.
        pairs = np.frombuffer(info.key_hashes, dtype=np.uint64).reshape(-1, 2)
        hashes = (pairs[:, 0], pairs[:, 1])
        if versions.key_filter is not None:
            versions.key_filter.add(*hashes)
        if self._filter_build is not None:
            self._filter_pending.append(hashes)
        self._flushes += 1  # before the view shows it: whoever sees the flush sees it counted
        versions.install_flush(table, segment)
        for wal_number in table.wal_numbers:
            remove_if_present(os.path.join(self._path, files.wal_name(wal_number)))

    def _start(self, segments: tuple[Segment, ...], run: tuple[int, int]) -> None:
        start, end = run
        inputs = segments[start:end]
        number = self._versions.allocate_file_number()
        future = self._executor.submit(
            self._merger.merge if self._merger else compact_files, [s.path for s in inputs],
            os.path.join(self._path, files.segment_name(number)),
            end == len(segments),  # tombstones may go only when nothing older lies below
            max(s.max_seq for s in inputs), self._block_bytes, self._bits_per_key)
        with self._cond:
            self._merge = _Merge(inputs, number, future, self._compact_all)
        future.add_done_callback(self._wake)

    def _wake(self, _future: Future) -> None:
        with self._cond:
            self._cond.notify_all()

    def _install(self, merge: _Merge) -> None:
        try:
            info = merge.future.result()
        except Exception as exc:
            # The engine still serves every read and write; only merging stops until restart.
            log.error("%s: compaction failed, no more automatic compactions: %s", self._path, exc)
            with self._cond:
                self.compaction_error = str(exc)
                self._merge = None
                self._compact_all = False
                self._cond.notify_all()
            return
        output = Segment(info.path, merge.number) if info.entries else None
        if output is None:
            remove_if_present(info.path)
        self._versions.install_merge(merge.inputs, output)
        with self._cond:
            self._merge = None
            self._compactions += 1
            if merge.everything:
                self._compact_all = False
            self._cond.notify_all()
        for segment in merge.inputs:
            if self._filter_build is not None:
                self._deferred.append(segment.path)
            else:
                remove_if_present(segment.path)  # readers still holding it keep their mapping

    def _filter_wanted(self) -> bool:
        """The key filter holds more keys than it was sized for and no rebuild is under way."""
        key_filter = self._versions.key_filter
        return (key_filter is not None and key_filter.full and self._filter_build is None
                and self.filter_error is None and not self._stopping)

    def _start_filter_build(self, segments: tuple[Segment, ...]) -> None:
        paths = [s.path for s in segments]
        build = self._merger.key_filter if self._merger else key_filters.build
        self._filter_pending = []
        # The floor is read here, in this process, and sent along: a worker process has its own.
        self._filter_build = self._executor.submit(build, paths, self._bits_per_key,
                                                   key_filters.MIN_CAPACITY)
        self._filter_build.add_done_callback(self._wake)

    def _install_filter(self) -> None:
        future, self._filter_build = self._filter_build, None
        try:
            built = key_filters.KeyFilter.from_bytes(future.result())
        except Exception as exc:
            # Only an optimisation: reads go on through each segment's own filter.
            log.error("%s: building the key filter failed: %s", self._path, exc)
            self.filter_error = str(exc)
        else:
            for hashes in self._filter_pending:
                built.add(*hashes)
            self._versions.install_key_filter(built)
        self._filter_pending = []
        for path in self._deferred:
            remove_if_present(path)
        self._deferred = []
        with self._cond:
            self._cond.notify_all()
