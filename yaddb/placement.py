"""Where things are: the partition of a key, and the one parser of "host:port" addresses.

Pure functions, shared by the router, the nodes and any client that routes by itself.
"""
from __future__ import annotations

import mmh3

from yaddb.errors import BadRequest

PARTITION_SEED = 0x52545231  # not the bloom filters' seed, and never to change: it places data


def partition_for(key: bytes, partitions: int) -> int:
    """The partition of `key`: MurmurHash3 (32-bit, unsigned, seed PARTITION_SEED) mod the count.

    Keys are often mmh3 hashes themselves; hashing again with another seed spreads any bytes,
    hashed or not, evenly. Placement is static: changing the partition count moves keys.
    """
    return mmh3.hash(key, PARTITION_SEED, signed=False) % partitions


class BadAddress(BadRequest):
    """Text that is not HOST:PORT."""


def parse_address(text: object) -> tuple[str, int]:
    """'host:port' (or 'tcp://host:port', '[::1]:port') -> (host, port); BadAddress otherwise."""
    if not isinstance(text, str):
        raise BadAddress(f"an address must be a \"host:port\" string, not {type(text).__name__}")
    host, sep, port = text.strip().removeprefix("tcp://").rpartition(":")
    host = host.strip("[]") if host.startswith("[") else host
    if not sep or not host or not port.isascii() or not port.isdigit() \
            or not 0 < int(port) < 65536 or any(ch.isspace() for ch in host):
        raise BadAddress(f"{text[:80]!r} is not \"host:port\" (a host name or address, a colon, "
                         f"and a port from 1 to 65535)")
    return host, int(port)


def host_of(address: str) -> str:
    """The host part of a "host:port" address."""
    return parse_address(address)[0]


def is_loopback(host: str) -> bool:
    return host == "localhost" or host.startswith("127.") or host == "::1"


def split(op: str, entries: list, partitions: int) -> dict[int, tuple[list[int], list]]:
    """partition -> (positions in the request, that partition's entries), for mget/mdel/mset
    (an mset entry is [key, value]; the others' are keys)."""
    parts: dict[int, tuple[list[int], list]] = {}
    for position, entry in enumerate(entries):
        key = entry[0] if op == "mset" else entry
        positions, subset = parts.setdefault(partition_for(key, partitions), ([], []))
        positions.append(position)
        subset.append(entry)
    return parts
