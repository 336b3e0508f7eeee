"""A write batch: puts and deletes applied together, as one log record with one fsync."""
from __future__ import annotations

from typing import TYPE_CHECKING, Optional

if TYPE_CHECKING:
    from yaddb.lsm.engine import Engine


class WriteBatch:
    """Puts and deletes applied together: one log record, one fsync. Use via Engine.batch()."""

    def __init__(self, engine: "Engine") -> None:
        self._engine = engine
        self.ops: list[tuple[bytes, Optional[bytes]]] = []

    def put(self, key: bytes, value: bytes) -> None:
        self.ops.append((key, value))

    def delete(self, key: bytes) -> None:
        self.ops.append((key, None))

    def __enter__(self) -> "WriteBatch":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self._engine.write_batch(self.ops)
