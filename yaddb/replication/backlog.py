"""The master's retained tail of its write log, so a slave that fell behind catches up with the
writes it missed instead of a full snapshot (Redis calls it the replication backlog)."""
from __future__ import annotations

from collections import deque
from typing import Optional

from yaddb.replication.messages import Entry

DEFAULT_BACKLOG_BYTES = 64 << 20


class Backlog:
    """Batches of consecutive writes, the oldest dropped past `max_bytes`."""

    def __init__(self, max_bytes: int = DEFAULT_BACKLOG_BYTES) -> None:
        self.max_bytes = max_bytes
        self._batches: deque[tuple[int, list[Entry], int]] = deque()  # first_seq, entries, bytes
        self._bytes = 0

    def append(self, first_seq: int, entries: list[Entry]) -> None:
        size = sum(len(key) + len(value or b"") + 8 for key, value in entries)
        self._batches.append((first_seq, entries, size))
        self._bytes += size
        while self._bytes > self.max_bytes and len(self._batches) > 1:
            self._bytes -= self._batches.popleft()[2]

    @property
    def oldest_seq(self) -> Optional[int]:
        """The first sequence number held (None when empty)."""
        return self._batches[0][0] if self._batches else None

    def since(self, applied: int, max_bytes: int) -> Optional[list[tuple[int, list[Entry]]]]:
        """The batches after `applied`, about `max_bytes` of them at most (at least one);
        None when writes after `applied` are no longer held (the slave needs a snapshot)."""
        oldest = self.oldest_seq
        if oldest is None or oldest > applied + 1:
            return None
        out: list[tuple[int, list[Entry]]] = []
        taken = 0
        for first, entries, size in self._batches:
            last = first + len(entries) - 1
            if last <= applied:
                continue
            if first <= applied:  # a batch the slave has half of: the rest
                entries = entries[applied + 1 - first:]
                first = applied + 1
            out.append((first, entries))
            taken += size
            if taken >= max_bytes:
                break
        return out
