"""What the engine is made of right now, with one owner (LevelDB's VersionSet).

The current `View` is the memtable taking writes, the frozen memtables waiting to be flushed
(newest first) and the live segments (newest first). Readers take `versions.view` once and
use that tuple: it is replaced whole, never changed in place, so a read needs no lock. Only
three moves change it: the writer freezes its memtable, a flush turns the oldest frozen one
into a segment, a merge replaces a run of segments. A flush or a merge is made durable in the
manifest before the view shows it.

`find_in_segments` is the read over a view's segments: the key filter, the bloom filters, then
the one segment that may hold the key.
"""
from __future__ import annotations

import threading
from dataclasses import replace
from typing import Callable, Optional

import mmh3

from yaddb.errors import EngineClosed
from yaddb.lsm import manifest as manifests
from yaddb.lsm.key_filter import KeyFilter
from yaddb.lsm.bloom import HASH_SEED
from yaddb.lsm.memtable import MISSING, Memtable
from yaddb.lsm.recovery import Recovered
from yaddb.lsm.sstable import Segment


# (memtable, frozen memtables newest first, segments newest first). A plain tuple, not a
# NamedTuple: Engine.get unpacks it on every read, and CPython unpacks only exact tuples fast.
View = tuple[Memtable, tuple[Memtable, ...], tuple[Segment, ...]]


class VersionSet:
    """The one owner of the view, the manifest, the key filter and file numbers.

    `changed` is the condition every waiter on the view uses (writers waiting for a flush,
    `wait_idle`, the maintenance thread): each move notifies it.
    """

    def __init__(self, path: str, recovered: Recovered, key_filter: Optional[KeyFilter]) -> None:
        """key_filter: the one saved at the last clean close, or None (maintenance builds one)."""
        self.path = path
        self.changed = threading.Condition()
        self.manifest = recovered.manifest
        self._next_file = recovered.next_file
        self.view: Optional[View] = (recovered.memtable, (), recovered.segments)
        self.key_filter = key_filter

    def current(self) -> View:
        """The view, or EngineClosed once the engine is closed."""
        view = self.view
        if view is None:
            raise EngineClosed(f"the engine at {self.path} is closed")
        return view

    def allocate_file_number(self) -> int:
        with self.changed:
            number = self._next_file
            self._next_file += 1
            return number

    def wait_for_room(self, max_frozen: int, failed: Callable[[], bool]) -> None:
        """Block while `max_frozen` memtables wait to be flushed (writers wait rather than
        let memory grow), unless the engine has failed."""
        with self.changed:
            while len(self.view[1]) >= max_frozen and not failed():
                self.changed.wait()

    def freeze(self, fresh: Memtable) -> None:
        """Make `fresh` the memtable taking writes; the one it replaces waits to be flushed."""
        with self.changed:
            mem, frozen, segments = self.view
            self.view = (fresh, (mem,) + frozen, segments)
            self.changed.notify_all()

    def install_flush(self, table: Memtable, segment: Segment) -> None:
        """`table`, the oldest frozen memtable, is now `segment`: record it, then show it."""
        mem, frozen, segments = self.view
        assert frozen[-1] is table, "memtables are flushed oldest first"
        # Tables frozen meanwhile are newer, so the oldest one left is the same either way.
        oldest = frozen[-2] if len(frozen) > 1 else mem
        self._store((segment,) + segments, log_number=oldest.wal_numbers[0],
                    last_seq=max(self.manifest.last_seq, table.last_seq))
        with self.changed:
            mem, frozen, segments = self.view
            self.view = (mem, frozen[:-1], (segment,) + segments)
            self.changed.notify_all()

    def install_merge(self, inputs: tuple[Segment, ...], output: Optional[Segment]) -> None:
        """The run of segments `inputs` is now `output` (None: nothing was left of it)."""
        segments = self.view[2]
        start = next(i for i, s in enumerate(segments) if s is inputs[0])
        end = start + len(inputs)
        assert all(a is b for a, b in zip(segments[start:end], inputs))
        segments = segments[:start] + ((output,) if output else ()) + segments[end:]
        self._store(segments)
        with self.changed:
            mem, frozen, _ = self.view
            self.view = (mem, frozen, segments)
            self.changed.notify_all()

    def install_key_filter(self, key_filter: KeyFilter) -> None:
        self.key_filter = key_filter
        with self.changed:
            self.changed.notify_all()

    def keys_estimate(self) -> int:
        mem, _, segments = self.current()
        return len(mem) + sum(s.entries for s in segments)

    def stats(self) -> dict:
        """The memtables', segments' and key filter's figures, for Engine.stats."""
        mem, frozen, segments = self.current()
        key_filter = self.key_filter
        return {
            "memtable_bytes": mem.approx_bytes,
            "memtable_entries": len(mem),
            "frozen_memtables": len(frozen),
            "segments": len(segments),
            "keys_on_disk": sum(s.entries for s in segments),  # counts shadowed versions too
            "tombstones_on_disk": sum(s.tombstones for s in segments),
            "disk_bytes": sum(s.size for s in segments),
            "index_bytes": sum(s.index_bytes for s in segments),
            "bloom_bytes": sum(s.bloom_bytes for s in segments),
            "key_filter_bytes": 0 if key_filter is None else len(key_filter.bloom.bits),
        }

    def close(self) -> tuple[Segment, ...]:
        """No view from now on; returns the segments, for the caller to close."""
        with self.changed:
            segments = self.view[2] if self.view else ()
            self.view = None
            self.changed.notify_all()
        return segments

    def _store(self, segments: tuple[Segment, ...], **changes) -> None:
        """Record a new set of live segments durably.

        Only the maintenance thread moves segments, so the lock is not held while the file is
        written: writers freezing memtables meanwhile are not held up.
        """
        with self.changed:
            next_file = self._next_file
        manifest = replace(self.manifest, segments=tuple(s.number for s in segments),
                           next_file=next_file, **changes)
        manifests.store(self.path, manifest)
        self.manifest = manifest


def find_in_segments(segments: tuple[Segment, ...], key_filter: Optional[KeyFilter],
                     key: bytes) -> Optional[bytes]:
    """`key`'s value in the newest of `segments` (newest first) that holds it, or None: the
    key filter first, then each segment's bloom filter, then its index and block."""
    h1, h2 = mmh3.hash64(key, HASH_SEED, signed=False)
    if key_filter is not None:
        bloom = key_filter.bloom
        position = h1 % bloom.m
        if not bloom.bits[position >> 3] >> (position & 7) & 1 or not bloom.may_contain_hash(h1, h2):
            return None  # in no segment
        # The key filter said maybe, so if no newer segment has the key the oldest is the
        # one to read: its own filter would only cost a present key another microsecond.
        *newer, oldest = segments
    else:
        newer, oldest = segments, None
    for segment in newer:
        # Every probe inline (this loop runs once per segment for most gets): for an absent
        # key the first two say no 3 times in 4 at 10 bits per key.
        bits, m, probes = segment.probe
        position = h1 % m
        if not bits[position >> 3] >> (position & 7) & 1:
            continue
        step = h2 % m
        for _ in probes:
            position = (position + step) % m
            if not bits[position >> 3] >> (position & 7) & 1:
                break
        else:
            value = segment.lookup(key)
            if value is not MISSING:
                return value
    if oldest is not None:
        value = oldest.lookup(key)
        if value is not MISSING:
            return value
    return None
