"""Synthetic operations and role samples for the chaos checker's own tests: a write, a
delete, a read, one node's answer, a node answering at a steady pace."""
from __future__ import annotations

from tests.chaos.history import DELETE, OK, READ, WRITE, Op, RoleSample

K, L = b"k", b"l"


def w(value: bytes, start: float, end: float, result: str = OK, key: bytes = K,
      concern: str | None = None) -> Op:
    return Op("c1", WRITE, key, value, start, end, result, w=concern)


def d(start: float, end: float, result: str = OK, key: bytes = K) -> Op:
    return Op("c2", DELETE, key, None, start, end, result)


def r(value: bytes | None, start: float, end: float, key: bytes = K) -> Op:
    return Op("c3", READ, key, value, start, end, OK)


def sample(node: str, asked: float, answered: float, role: str = "master", epoch: int = 1,
           leased: bool = True, lease_s: float = 2.0, partition: int = 0) -> RoleSample:
    return RoleSample(node, asked, answered, role, epoch, leased, lease_s, partition)


def every(node: str, start: float, stop: float, step: float = 0.1, **fields) -> list[RoleSample]:
    """A node answering every `step` s from `start` to `stop` (each answer 10 ms later)."""
    count = int(round((stop - start) / step)) + 1
    return [sample(node, start + i * step, start + i * step + 0.01, **fields)
            for i in range(count)]
