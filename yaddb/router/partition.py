"""Where a key lives: pure functions, shared by the router and any client that routes itself."""
from __future__ import annotations

import mmh3

PARTITION_SEED = 0x52545231  # not the bloom filters' seed, and never to change: it places data


def partition_for(key: bytes, partitions: int) -> int:
    """The partition of `key`: MurmurHash3 (32-bit, unsigned, seed PARTITION_SEED) mod the count.

    Keys are often mmh3 hashes themselves; hashing again with another seed spreads any bytes,
    hashed or not, evenly. Placement is static: changing the partition count moves keys.
    """
    return mmh3.hash(key, PARTITION_SEED, signed=False) % partitions


def parse_address(text: str) -> tuple[str, int]:
    """'host:port' -> (host, port); raises ValueError saying what is wrong."""
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"{text!r} is not HOST:PORT")
    return host, int(port)
