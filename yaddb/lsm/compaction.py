"""Compaction: which segments to merge (size-tiered), and the merge itself.

Segments are kept newest first and a merge always takes a run of adjacent ones, so the output
can stand where the run stood and "newer wins" still holds. A tombstone may be dropped only
when the run reaches the oldest segment: below it there is nothing left for it to hide.
"""
from __future__ import annotations

import heapq
import math
from typing import Iterable, Iterator, Optional, Sequence

from yaddb.lsm.sstable import Segment, SegmentInfo, write_segment


def tier(size: int, base: int, fanout: int) -> int:
    return 0 if size <= base else int(math.log(size / base, fanout))


def pick_run(sizes: Sequence[int], base: int, fanout: int, max_segments: int) -> Optional[tuple[int, int]]:
    """[start, end) of the run to merge (indexes into the newest-first list), or None.

    Size-tiered: `fanout` adjacent segments of one size tier merge into one of the next tier, so
    a key is rewritten about log_fanout(data / base) times and the count of segments stays near
    (fanout - 1) per tier. Past `max_segments`, the adjacent pair with the smallest total merges:
    merging the newest ones instead would rewrite a big segment again at every flush.
    """
    tiers = [tier(size, base, fanout) for size in sizes]
    start = 0
    while start < len(tiers):
        end = start
        while end < len(tiers) and tiers[end] == tiers[start]:
            end += 1
        if end - start >= fanout:
            return start, end
        start = end
    if len(sizes) > max_segments:
        start = min(range(len(sizes) - 1), key=lambda i: sizes[i] + sizes[i + 1])
        return start, start + 2
    return None


def merge(sources: Sequence[Iterable[tuple[bytes, Optional[bytes]]]],
          drop_tombstones: bool) -> Iterator[tuple[bytes, Optional[bytes]]]:
    """Merge sorted sources, given newest first, into one sorted stream where the newest wins."""
    tagged = [_ranked(source, rank) for rank, source in enumerate(sources)]
    previous = None
    for key, _rank, value in heapq.merge(*tagged):
        if key == previous:
            continue  # an older version of a key already emitted
        previous = key
        if value is None and drop_tombstones:
            continue
        yield key, value


def _ranked(source: Iterable[tuple[bytes, Optional[bytes]]],
            rank: int) -> Iterator[tuple[bytes, int, Optional[bytes]]]:
    # (key, rank) is unique across sources, so heapq never compares two values.
    for key, value in source:
        yield key, rank, value


def compact_files(paths: Sequence[str], output: str, drop_tombstones: bool, max_seq: int,
                  block_bytes: int, bits_per_key: float) -> SegmentInfo:
    """Merge segment files (newest first) into `output`. Runs in a worker process or thread."""
    segments = [Segment(path, 0) for path in paths]
    try:
        return write_segment(output, merge([s.items() for s in segments], drop_tombstones),
                             max_seq, block_bytes, bits_per_key)
    finally:
        for segment in segments:
            segment.close()
