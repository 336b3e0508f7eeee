"""Bloom filters: built with numpy, probed with two MurmurHash3 halves (Kirsch-Mitzenmacher).

Probe i of a key is (h1 + i * h2) mod m, with h1, h2 the two unsigned 64-bit halves of
mmh3.hash64(key, seed=HASH_SEED), each reduced mod m first so all arithmetic fits in uint64.
Bit p lives in byte p >> 3 at bit p & 7 (numpy's little bit order).

Serialized: m u64 | k u8 | bits (ceil(m / 8) bytes).
"""
from __future__ import annotations

import math
import struct
from typing import Sequence

import mmh3
import numpy as np

HASH_SEED = 0x59414442  # fixed forever: changing it would break every filter on disk
_HEAD = struct.Struct("<QB")
MIN_BITS = 64
_CHUNK = 1 << 18


def key_hash(key: bytes) -> tuple[int, int]:
    """The two hash halves every filter probes with; compute once per lookup."""
    return mmh3.hash64(key, HASH_SEED, signed=False)


def hash_arrays(keys: Sequence[bytes]) -> tuple[np.ndarray, np.ndarray]:
    """key_hash of every key, as two uint64 arrays."""
    pairs = np.array([key_hash(key) for key in keys], dtype=np.uint64).reshape(-1, 2)
    return pairs[:, 0], pairs[:, 1]


def probes_for(bits_per_key: float) -> int:
    return max(1, min(30, round(bits_per_key * math.log(2))))


def expected_false_positive_rate(m: int, k: int, n: int) -> float:
    return (1.0 - math.exp(-k * n / m)) ** k if n else 0.0


class BloomFilter:
    __slots__ = ("m", "k", "bits")

    def __init__(self, m: int, k: int, bits: bytes) -> None:
        self.m = m
        self.k = k
        self.bits = bits

    @classmethod
    def from_hashes(cls, h1: np.ndarray, h2: np.ndarray, bits_per_key: float,
                    capacity: int = 0) -> "BloomFilter":
        """Build from uint64 arrays of hash halves, one entry per key, sized for
        max(len(h1), capacity) keys."""
        m = max(MIN_BITS, math.ceil(max(len(h1), capacity) * bits_per_key))
        bloom = cls(m, probes_for(bits_per_key), bytes((m + 7) // 8))
        flags = np.zeros(m, dtype=bool)
        for start in range(0, len(h1), _CHUNK):  # in chunks: temporaries stay a few MiB
            flags[bloom._positions(h1[start:start + _CHUNK], h2[start:start + _CHUNK])] = True
        bloom.bits = np.packbits(flags, bitorder="little").tobytes()
        return bloom

    @classmethod
    def from_keys(cls, keys: Sequence[bytes], bits_per_key: float) -> "BloomFilter":
        return cls.from_hashes(*hash_arrays(keys), bits_per_key)

    def _positions(self, h1: np.ndarray, h2: np.ndarray) -> np.ndarray:
        """Every probe position of every key, as one array."""
        modulus = np.uint64(self.m)
        base = h1 % modulus
        step = h2 % modulus
        return np.concatenate([(base + np.uint64(i) * step) % modulus for i in range(self.k)])

    def add_hashes(self, h1: np.ndarray, h2: np.ndarray) -> None:
        """Set the bits of more keys; `bits` must be a bytearray."""
        positions = self._positions(h1, h2)
        view = np.frombuffer(self.bits, dtype=np.uint8)
        np.bitwise_or.at(view, positions >> np.uint64(3),
                         np.left_shift(1, positions & np.uint64(7)).astype(np.uint8))

    def may_contain_hash(self, h1: int, h2: int) -> bool:
        m = self.m
        bits = self.bits
        position = h1 % m
        step = h2 % m
        for _ in range(self.k):
            if not bits[position >> 3] >> (position & 7) & 1:
                return False
            position = (position + step) % m
        return True

    def may_contain(self, key: bytes) -> bool:
        return self.may_contain_hash(*key_hash(key))

    def to_bytes(self) -> bytes:
        return _HEAD.pack(self.m, self.k) + self.bits

    @classmethod
    def from_bytes(cls, data: bytes) -> "BloomFilter":
        """Raises ValueError when the bytes cannot be a filter."""
        if len(data) < _HEAD.size:
            raise ValueError("bloom filter shorter than its header")
        m, k = _HEAD.unpack_from(data, 0)
        bits = data[_HEAD.size:]
        if not 1 <= k <= 30 or m < MIN_BITS or len(bits) != (m + 7) // 8:
            raise ValueError(f"bloom filter header m={m} k={k} does not match {len(bits)} bytes")
        return cls(m, k, bytes(bits))
