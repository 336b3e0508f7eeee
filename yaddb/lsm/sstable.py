"""Segment files on disk: writing one from sorted items, and reading it through mmap."""
from __future__ import annotations

import mmap
import os
import sys
from array import array
from bisect import bisect_right, bisect_left
from dataclasses import dataclass
from typing import Iterable, Iterator, Optional

import numpy as np

from yaddb.errors import CorruptionError
from yaddb.lsm import sstable_format as fmt
from yaddb.lsm.bloom import BloomFilter, key_hash
from yaddb.durable import TMP_SUFFIX, fsync_dir
from yaddb.lsm.memtable import MISSING

DEFAULT_BLOCK_BYTES = 2048
DEFAULT_BITS_PER_KEY = 10.0


@dataclass(frozen=True)
class SegmentInfo:
    path: str
    entries: int
    tombstones: int
    max_seq: int
    size: int
    key_hashes: bytes = b""  # key_hash of every key as uint64 pairs, for the engine's key filter


def write_segment(path: str, items: Iterable[tuple[bytes, Optional[bytes]]], max_seq: int,
                  block_bytes: int = DEFAULT_BLOCK_BYTES,
                  bits_per_key: float = DEFAULT_BITS_PER_KEY) -> SegmentInfo:
    """Write sorted, unique (key, value-or-None) items to `path` crash-safely.

    The file is built under a temporary name, fsynced, renamed into place and its directory
    fsynced, so `path` either does not exist or is whole.
    """
    tmp = path + TMP_SUFFIX
    first_keys: list[bytes] = []
    offsets: list[int] = []
    hashes = array("Q")
    entries = tombstones = position = 0
    keys: list[bytes] = []
    values: list[Optional[bytes]] = []
    pending = 0
    previous: Optional[bytes] = None
    with open(tmp, "wb") as file:
        def emit() -> None:
            nonlocal position, keys, values, pending
            block = fmt.encode_data_block(keys, values)
            first_keys.append(keys[0])
            offsets.append(position)
            file.write(block)
            position += len(block)
            keys, values, pending = [], [], 0

        for key, value in items:
            if previous is not None and key <= previous:
                raise ValueError("segment items must be sorted and unique")
            previous = key
            keys.append(key)
            values.append(value)
            hashes.extend(key_hash(key))
            entries += 1
            if value is None:
                tombstones += 1
                pending += len(key) + 8
            else:
                pending += len(key) + len(value) + 8
            if pending >= block_bytes:
                emit()
        if keys:
            emit()
        offsets.append(position)
        pairs = np.frombuffer(hashes, dtype=np.uint64).reshape(-1, 2)
        bloom = fmt.seal(BloomFilter.from_hashes(pairs[:, 0], pairs[:, 1], bits_per_key).to_bytes())
        index = fmt.encode_index(first_keys, offsets)
        footer = fmt.Footer(position, len(bloom), position + len(bloom), len(index),
                            entries, tombstones, max_seq)
        file.write(bloom)
        file.write(index)
        file.write(footer.encode())
        file.flush()
        os.fsync(file.fileno())
        size = file.tell()
    os.replace(tmp, path)
    fsync_dir(os.path.dirname(path) or ".")
    return SegmentInfo(path, entries, tombstones, max_seq, size, hashes.tobytes())


class Segment:
    """An open, immutable segment. Lookups read one block; blocks are checksummed on every read."""

    def __init__(self, path: str, number: int) -> None:
        self.path = path
        self.number = number
        with open(path, "rb") as file:
            self.size = os.fstat(file.fileno()).st_size
            if self.size < fmt.FOOTER.size:
                raise CorruptionError(path, 0, "file too short to be a segment")
            # The mapping stays valid after the file is unlinked by a compaction, so readers
            # that still hold this segment keep working.
            self._map = mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_READ)
        try:
            footer = fmt.Footer.decode(self._map[self.size - fmt.FOOTER.size:], self.size)
            bloom_block = self._map[footer.bloom_offset:footer.bloom_offset + footer.bloom_length]
            try:
                self.bloom = BloomFilter.from_bytes(
                    fmt.unseal(bloom_block, footer.bloom_offset, "bloom"))
            except ValueError as exc:
                if isinstance(exc, fmt.FormatError):
                    raise
                raise fmt.FormatError(footer.bloom_offset, str(exc)) from None
            self._first_keys, self._offsets = fmt.decode_index(
                self._map[footer.index_offset:footer.index_offset + footer.index_length],
                footer.index_offset, footer.bloom_offset)
        except fmt.FormatError as exc:
            self._map.close()
            raise CorruptionError(path, exc.offset, exc.what) from None
        self.entries = footer.entries
        self.tombstones = footer.tombstones
        self.max_seq = footer.max_seq
        self.index_bytes = (sys.getsizeof(self._first_keys)
                            + sum(sys.getsizeof(k) for k in self._first_keys)
                            + self._offsets.itemsize * len(self._offsets))
        self.bloom_bytes = sys.getsizeof(self.bloom.bits)
        # What Engine.get probes inline: the bits, m, and a range over the probes after the first.
        self.probe = (self.bloom.bits, self.bloom.m, range(self.bloom.k - 1))

    def _block(self, index: int) -> tuple[list[bytes], list[Optional[bytes]]]:
        try:
            return fmt.read_data_block(self._map, self._offsets[index], self._offsets[index + 1])
        except fmt.FormatError as exc:
            raise CorruptionError(self.path, exc.offset, exc.what) from None

    def lookup(self, key: bytes) -> object:
        """The value, None for a tombstone, or MISSING. The caller has checked the bloom filter."""
        index = bisect_right(self._first_keys, key) - 1
        if index < 0:
            return MISSING
        keys, values = self._block(index)
        position = bisect_left(keys, key)
        if position < len(keys) and keys[position] == key:
            return values[position]
        return MISSING

    def get(self, key: bytes) -> object:
        """Lookup guarded by the bloom filter."""
        if not self.bloom.may_contain_hash(*key_hash(key)):
            return MISSING
        return self.lookup(key)

    def items(self, start: Optional[bytes] = None) -> Iterator[tuple[bytes, Optional[bytes]]]:
        """Every (key, value-or-None) from `start` on, in key order."""
        first = 0 if start is None else max(0, bisect_right(self._first_keys, start) - 1)
        for index in range(first, len(self._first_keys)):
            keys, values = self._block(index)
            skip = 0 if start is None or index != first else bisect_left(keys, start)
            yield from zip(keys[skip:], values[skip:])

    def key_hashes(self) -> bytes:
        """key_hash of every key, as packed uint64 pairs (for a KeyFilter)."""
        hashes = array("Q")
        for index in range(len(self._first_keys)):
            for key in self._block(index)[0]:
                hashes.extend(key_hash(key))
        return hashes.tobytes()

    def verify(self) -> None:
        """Read and check every block; raises CorruptionError naming the file."""
        for index in range(len(self._first_keys)):
            self._block(index)

    def close(self) -> None:
        self._map.close()
