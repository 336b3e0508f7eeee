"""A bloom filter over every key in every segment, so an absent key costs one probe in all.

Each segment has its own filter, but in Python each probe costs about a quarter of a
microsecond, so a missing key would cost that once per segment. Keys reach segments only
through flushes (merges only combine keys already there), so adding each flushed table's keys
keeps this filter a superset of the keys on disk. It is built from the segments in a worker at
open (or loaded from KEYFILTER after a clean shutdown), and rebuilt when it holds more keys
than it was sized for, which would raise its false-positive rate.

KEYFILTER: b"YADDBKF1" | crc32 u32 of the rest | msgpack [segments, capacity, count, bloom bytes]
"""
from __future__ import annotations

import os
import zlib
from typing import Optional, Sequence

import msgpack
import numpy as np

from yaddb.lsm.bloom import BloomFilter
from yaddb.durable import write_atomically
from yaddb.lsm.sstable import Segment

FILE_NAME = "KEYFILTER"
_MAGIC = b"YADDBKF1"
MIN_CAPACITY = 1 << 16


class KeyFilter:
    def __init__(self, bloom: BloomFilter, capacity: int, count: int) -> None:
        self.bloom = BloomFilter(bloom.m, bloom.k, bytearray(bloom.bits))  # grows in place
        self.capacity = capacity
        self.count = count

    @property
    def full(self) -> bool:
        return self.count > self.capacity

    def add(self, h1: np.ndarray, h2: np.ndarray) -> None:
        self.bloom.add_hashes(h1, h2)
        self.count += len(h1)

    def to_bytes(self) -> bytes:
        return msgpack.packb([self.capacity, self.count, self.bloom.to_bytes()])

    @classmethod
    def from_bytes(cls, data: bytes) -> "KeyFilter":
        capacity, count, bloom = msgpack.unpackb(data)
        return cls(BloomFilter.from_bytes(bloom), capacity, count)


def build(paths: Sequence[str], bits_per_key: float, min_capacity: int = MIN_CAPACITY) -> bytes:
    """KeyFilter.to_bytes() over every key of the segment files, sized for twice their keys
    and at least `min_capacity`; runs in a worker."""
    hashes = []
    for path in paths:
        segment = Segment(path, 0)
        try:
            hashes.append(np.frombuffer(segment.key_hashes(), dtype=np.uint64))
        finally:
            segment.close()
    pairs = np.concatenate(hashes).reshape(-1, 2) if hashes else np.zeros((0, 2), np.uint64)
    capacity = max(min_capacity, 2 * len(pairs))
    bloom = BloomFilter.from_hashes(pairs[:, 0], pairs[:, 1], bits_per_key, capacity)
    return KeyFilter(bloom, capacity, len(pairs)).to_bytes()


def save(directory: str, segments: tuple[int, ...], key_filter: KeyFilter) -> None:
    body = msgpack.packb([list(segments), key_filter.to_bytes()])
    write_atomically(os.path.join(directory, FILE_NAME),
                     _MAGIC + zlib.crc32(body).to_bytes(4, "little") + body)


def take(directory: str, segments: tuple[int, ...]) -> Optional[KeyFilter]:
    """The filter saved at the last clean shutdown, if it covers exactly these segments.

    The file is removed either way: once the engine runs, it no longer describes the disk.
    """
    path = os.path.join(directory, FILE_NAME)
    try:
        with open(path, "rb") as file:
            data = file.read()
    except FileNotFoundError:
        return None
    os.remove(path)
    body = data[len(_MAGIC) + 4:]
    if data[:len(_MAGIC)] != _MAGIC or zlib.crc32(body) != int.from_bytes(data[8:12], "little"):
        return None  # only an optimisation: a damaged one is rebuilt
    try:
        saved_segments, filter_bytes = msgpack.unpackb(body)
        if tuple(saved_segments) != segments:
            return None
        return KeyFilter.from_bytes(filter_bytes)
    except (ValueError, TypeError):
        return None
