"""The key rule, every size limit and the durability settings, in one place: pure, importing
only yaddb.errors, so every floor above agrees on them."""
from __future__ import annotations

from yaddb.errors import BadRequest, InvalidKey

MAX_KEY_BYTES = 1024
MAX_LABEL_BYTES = 255                      # content_type and encoding, each, in UTF-8
DEFAULT_MAX_VALUE_BYTES = 4 << 20          # --max-value-bytes
BLOB_OVERHEAD = 2 + 2 * MAX_LABEL_BYTES    # most bytes a stored item adds to its value
BATCH_ROOM = 16 << 20                      # bytes a frame may carry beyond one largest item
FSYNC_POLICIES = ("always", "interval", "never")  # when a node fsyncs its log (lsm/wal.py)
DEFAULT_REPLICATION_TIMEOUT_S = 2.0  # how long a w>1 write waits for its members' confirmations
# A master stops counting a slave silent this long as a member; the router's promotion rule
# counts members as the master does (replication/master.py, router/failover.py).
SLAVE_FORGET_S = 300.0
WRITE_CONCERNS = ("majority", "all")  # besides a number of members, 1 (the master alone) and up


def check_key(key: object) -> bytes:
    """key as bytes, or InvalidKey saying what is wrong with it."""
    if isinstance(key, (bytearray, memoryview)):
        key = bytes(key)
    if type(key) is not bytes:
        raise InvalidKey(f"a key must be bytes, not {type(key).__name__}")
    if not key:
        raise InvalidKey(f"the key is empty; a key is 1 to {MAX_KEY_BYTES} bytes")
    if len(key) > MAX_KEY_BYTES:
        raise InvalidKey(f"the key is {len(key)} bytes; a key is at most {MAX_KEY_BYTES}")
    return key


def check_write_concern(w: object) -> "int | str":
    """A write concern as given (1, 2, ... members, "majority" or "all"; digits in text are a
    number), or BadRequest saying what is wrong."""
    if isinstance(w, str) and w.strip().isascii() and w.strip().isdigit():
        w = int(w)
    if isinstance(w, str) and w.strip().lower() in WRITE_CONCERNS:
        return w.strip().lower()
    if type(w) is int and 1 <= w <= 1000:
        return w
    raise BadRequest(f"w must be a number of members (1 = the master alone), \"majority\" or "
                     f"\"all\", not {str(w)[:40]!r}")


def max_message_bytes(max_value_bytes: int = DEFAULT_MAX_VALUE_BYTES) -> int:
    """Largest frame a process accepts: one largest item, or batches up to BATCH_ROOM."""
    return max_value_bytes + BLOB_OVERHEAD + BATCH_ROOM
