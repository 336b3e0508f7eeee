"""The storage engine: a crash-safe LSM tree. `Engine` is its whole public face."""
from yaddb.lsm.engine import MAX_KEY_BYTES, Engine, WriteBatch
from yaddb.lsm.snapshot import Snapshot

__all__ = ["Engine", "Snapshot", "WriteBatch", "MAX_KEY_BYTES"]
