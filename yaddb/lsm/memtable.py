"""The memtable: a red-black tree of the newest writes, keyed by bytes.

The tree keeps keys in order for flushes and scans. A dict beside it maps each key to its node,
so point reads and overwrites of a present key cost O(1) instead of a walk down the tree; the
tree is only descended to place a new key.
"""
from __future__ import annotations

from typing import Iterator, Optional

MISSING = object()   # returned by lookups for "this structure knows nothing of the key"
ENTRY_OVERHEAD = 32  # rough bytes per entry beyond key and value, for the flush threshold


class _Node:
    __slots__ = ("key", "value", "left", "right", "parent", "red")

    def __init__(self, key: bytes, value: Optional[bytes], parent: Optional["_Node"]) -> None:
        self.key = key
        self.value = value
        self.left: Optional[_Node] = None
        self.right: Optional[_Node] = None
        self.parent = parent
        self.red = True


class Memtable:
    """Values are bytes; None is a tombstone (the key was deleted)."""

    def __init__(self) -> None:
        self._root: Optional[_Node] = None
        self.nodes: dict[bytes, _Node] = {}
        self.approx_bytes = 0
        self.last_seq = 0
        self.wal_numbers: list[int] = []  # the logs that hold this table's writes
        self.wal = None  # the open log it was frozen with; the flush syncs and closes it

    def __len__(self) -> int:
        return len(self.nodes)

    def get(self, key: bytes) -> object:
        """The value, None for a tombstone, or MISSING."""
        node = self.nodes.get(key)
        return MISSING if node is None else node.value

    def put(self, key: bytes, value: Optional[bytes], seq: int) -> None:
        self.last_seq = seq
        node = self.nodes.get(key)
        if node is not None:
            old = node.value
            self.approx_bytes += (0 if value is None else len(value)) - (0 if old is None else len(old))
            node.value = value
            return
        self.approx_bytes += len(key) + (0 if value is None else len(value)) + ENTRY_OVERHEAD
        # Descend to the leaf position (inlined: this is the hot path of every new key).
        parent = None
        node = self._root
        while node is not None:
            parent = node
            node = node.left if key < node.key else node.right
        new = self.nodes[key] = _Node(key, value, parent)
        if parent is None:
            self._root = new
            new.red = False
            return
        if key < parent.key:
            parent.left = new
        else:
            parent.right = new
        if parent.red:
            self._rebalance(new)

    def items(self) -> Iterator[tuple[bytes, Optional[bytes]]]:
        """Every (key, value-or-None) in key order. The tree must not change meanwhile."""
        stack: list[_Node] = []
        node = self._root
        while stack or node is not None:
            while node is not None:
                stack.append(node)
                node = node.left
            node = stack.pop()
            yield node.key, node.value
            node = node.right

    def columns(self) -> tuple[list[bytes], list[Optional[bytes]]]:
        """All keys in order, and their values, as two lists."""
        keys: list[bytes] = []
        values: list[Optional[bytes]] = []
        for key, value in self.items():
            keys.append(key)
            values.append(value)
        return keys, values

    def _rebalance(self, node: _Node) -> None:
        parent = node.parent
        while parent is not None and parent.red:
            grand = parent.parent  # a red node is never the root, so grand exists
            if parent is grand.left:
                uncle = grand.right
                if uncle is not None and uncle.red:
                    parent.red = uncle.red = False
                    grand.red = True
                    node = grand
                else:
                    if node is parent.right:
                        node = parent
                        self._rotate_left(node)
                        parent = node.parent
                    parent.red = False
                    grand.red = True
                    self._rotate_right(grand)
            else:
                uncle = grand.left
                if uncle is not None and uncle.red:
                    parent.red = uncle.red = False
                    grand.red = True
                    node = grand
                else:
                    if node is parent.left:
                        node = parent
                        self._rotate_right(node)
                        parent = node.parent
                    parent.red = False
                    grand.red = True
                    self._rotate_left(grand)
            parent = node.parent
        self._root.red = False

    def _replace_child(self, old: _Node, new: _Node) -> None:
        parent = old.parent
        new.parent = parent
        if parent is None:
            self._root = new
        elif parent.left is old:
            parent.left = new
        else:
            parent.right = new

    def _rotate_left(self, node: _Node) -> None:
        pivot = node.right
        node.right = pivot.left
        if pivot.left is not None:
            pivot.left.parent = node
        self._replace_child(node, pivot)
        pivot.left = node
        node.parent = pivot

    def _rotate_right(self, node: _Node) -> None:
        pivot = node.left
        node.left = pivot.right
        if pivot.right is not None:
            pivot.right.parent = node
        self._replace_child(node, pivot)
        pivot.right = node
        node.parent = pivot

    def check_invariants(self) -> int:
        """Verify the red-black rules; returns the black height. For tests."""
        def walk(node: Optional[_Node], low: Optional[bytes], high: Optional[bytes]) -> int:
            if node is None:
                return 1
            assert (low is None or low < node.key) and (high is None or node.key < high)
            if node.red:
                assert not (node.left and node.left.red) and not (node.right and node.right.red)
            left = walk(node.left, low, node.key)
            assert left == walk(node.right, node.key, high), "unequal black heights"
            return left + (0 if node.red else 1)
        assert self._root is None or not self._root.red
        return walk(self._root, None, None)
