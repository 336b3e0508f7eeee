"""Sparse index lookup: a red-black tree (the seed's design) against bisect on a sorted list.

Prints ns per floor lookup (the block that may hold a key) and bytes per entry for each.
Run: python3 bench/bench_sparse_index.py [entries]
"""
from __future__ import annotations

import random
import sys
import time
from array import array
from bisect import bisect_right

import mmh3

import common  # noqa: F401  (puts the repository on sys.path, for yaddb)
from yaddb.lsm.memtable import Memtable


def floor_in_tree(table: Memtable, key: bytes):
    """The entry with the greatest key <= key, walking the red-black tree."""
    node, best = table._root, None
    while node is not None:
        if node.key <= key:
            best, node = node, node.right
        else:
            node = node.left
    return best


def measure(label: str, lookup, probes: list[bytes]) -> float:
    start = time.perf_counter()
    for probe in probes:
        lookup(probe)
    nanos = (time.perf_counter() - start) / len(probes) * 1e9
    print(f"{label:<22} {nanos:8.0f} ns/lookup")
    return nanos


def main() -> None:
    entries = int(sys.argv[1]) if len(sys.argv) > 1 else 60_000  # about 1M keys at 16 per block
    first_keys = sorted(mmh3.hash_bytes(b"block%d" % i) for i in range(entries))
    probes = [mmh3.hash_bytes(b"probe%d" % i) for i in range(200_000)]
    random.Random(1).shuffle(probes)

    table = Memtable()
    for number, key in enumerate(first_keys, start=1):
        table.put(key, number.to_bytes(8, "little"), number)
    keys_list = list(first_keys)
    offsets = array("Q", range(entries))
    # Structure bytes per entry beyond the key itself: a node (plus its 8-byte value) for the
    # tree, a list slot plus an 8-byte offset for the flat index.
    tree_bytes = sys.getsizeof(table._root) + sys.getsizeof(b"12345678")
    list_bytes = 8 + offsets.itemsize

    tree = measure("red-black tree", lambda key: floor_in_tree(table, key), probes)
    flat = measure("bisect on a list", lambda key: offsets[bisect_right(keys_list, key) - 1], probes)
    print(f"{entries} entries; beyond the keys, tree {tree_bytes} B/entry, list {list_bytes} B/entry; "
          f"bisect is {tree / flat:.1f}x faster")


if __name__ == "__main__":
    main()
