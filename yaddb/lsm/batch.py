"""A write batch: puts and deletes applied together, as one log record with one fsync."""
from __future__ import annotations

from typing import Callable, Iterable, Optional

Apply = Callable[[Iterable[tuple[bytes, Optional[bytes]]]], int]


class WriteBatch:
    """Puts and deletes applied together: one log record, one fsync. Use via Engine.batch()."""

    def __init__(self, apply: Apply) -> None:
        """`apply` writes the ops atomically (the engine's write_batch)."""
        self._apply = apply
        self.ops: list[tuple[bytes, Optional[bytes]]] = []

    def put(self, key: bytes, value: bytes) -> None:
        self.ops.append((key, value))

    def delete(self, key: bytes) -> None:
        self.ops.append((key, None))

    def __enter__(self) -> "WriteBatch":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self._apply(self.ops)
