"""The storage engine: a crash-safe LSM tree. `Engine` is its whole public face."""
from yaddb.limits import MAX_KEY_BYTES
from yaddb.lsm.engine import Engine, WriteBatch
from yaddb.lsm.snapshot import Snapshot

__all__ = ["Engine", "Snapshot", "WriteBatch", "MAX_KEY_BYTES"]
