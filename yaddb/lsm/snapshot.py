"""Consistent point-in-time iteration over the engine's sorted sources."""
from __future__ import annotations

from typing import Callable, Iterable, Iterator, Optional

from yaddb.lsm.compaction import merge

Source = Callable[[Optional[bytes]], Iterator[tuple[bytes, Optional[bytes]]]]


class Snapshot:
    """Every live item as of one sequence number; later writes do not show through."""

    def __init__(self, seq: int, sources: list[Source]) -> None:
        """sources: newest first, each called with a start key to give sorted (key, value)."""
        self.seq = seq
        self._sources = sources

    def items(self, start: Optional[bytes] = None,
              stop: Optional[bytes] = None) -> Iterator[tuple[bytes, bytes]]:
        """(key, value) in key order, from `start` (inclusive) to `stop` (exclusive)."""
        sources = [source(start) for source in self._sources]
        for key, value in merge(sources, drop_tombstones=True):
            if stop is not None and key >= stop:
                return
            yield key, value


def from_key(items: Iterable[tuple[bytes, Optional[bytes]]],
             start: Optional[bytes]) -> Iterator[tuple[bytes, Optional[bytes]]]:
    """The sorted items from `start` on (all of them when start is None)."""
    return iter(items) if start is None else ((k, v) for k, v in items if k >= start)
