import mmh3
import numpy as np
import pytest

from yaddb.lsm.bloom import BloomFilter, expected_false_positive_rate, probes_for


def _keys(prefix: bytes, count: int) -> list[bytes]:
    return [mmh3.hash_bytes(prefix + str(i).encode()) for i in range(count)]


@pytest.mark.parametrize("bits_per_key", [6, 10, 14])
def test_false_positive_rate_is_within_twice_its_target(bits_per_key):
    members = _keys(b"in", 20000)
    bloom = BloomFilter.from_keys(members, bits_per_key)
    assert all(bloom.may_contain(key) for key in members), "a bloom filter has no false negatives"
    target = expected_false_positive_rate(bloom.m, bloom.k, len(members))
    outsiders = _keys(b"out", 100000)
    measured = sum(bloom.may_contain(key) for key in outsiders) / len(outsiders)
    assert target / 2 <= measured <= target * 2, (measured, target)


def test_ten_bits_per_key_is_about_one_percent():
    bloom = BloomFilter.from_keys(_keys(b"k", 1000), 10)
    assert bloom.k == probes_for(10) == 7
    assert 0.005 < expected_false_positive_rate(bloom.m, bloom.k, 1000) < 0.012


def test_round_trip_and_rejects_inconsistent_bytes():
    bloom = BloomFilter.from_keys(_keys(b"k", 500), 10)
    again = BloomFilter.from_bytes(bloom.to_bytes())
    assert (again.m, again.k, again.bits) == (bloom.m, bloom.k, bloom.bits)
    with pytest.raises(ValueError):
        BloomFilter.from_bytes(bloom.to_bytes()[:-1])
    with pytest.raises(ValueError):
        BloomFilter.from_bytes(b"\x00" * 5)


def test_tiny_filters_get_a_minimum_size():
    bloom = BloomFilter.from_keys([b"only"], 10)
    assert bloom.m >= 64 and bloom.may_contain(b"only")
    empty = BloomFilter.from_keys([], 10)
    assert not empty.may_contain(b"anything")


def test_filters_built_in_chunks_hold_every_key():
    rng = np.random.default_rng(7)
    h1 = rng.integers(0, 2**64, size=600_000, dtype=np.uint64)  # more than one build chunk
    h2 = rng.integers(0, 2**64, size=600_000, dtype=np.uint64)
    bloom = BloomFilter.from_hashes(h1, h2, 10)
    sample = rng.integers(0, len(h1), size=5000)
    assert all(bloom.may_contain_hash(int(h1[i]), int(h2[i])) for i in sample)
