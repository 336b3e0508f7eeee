from collections import Counter

import mmh3
import pytest

from yaddb.placement import BadAddress, parse_address, partition_for


@pytest.mark.parametrize("keys", [
    [mmh3.hash_bytes(b"%d" % i) for i in range(20000)],      # the seed's keys: already hashes
    [b"user:%d" % i for i in range(20000)],                  # plain sequential keys
    [i.to_bytes(4, "big") for i in range(20000)],
])
@pytest.mark.parametrize("partitions", [2, 3, 8])
def test_keys_spread_evenly_over_partitions(keys, partitions):
    counts = Counter(partition_for(key, partitions) for key in keys)
    expected = len(keys) / partitions
    assert set(counts) == set(range(partitions))
    assert all(abs(count - expected) < expected * 0.06 for count in counts.values()), counts


def test_placement_is_stable():
    # Data placed by one release must be found by the next: these values must never change.
    keys = (b"a", b"b", b"key", b"\x00" * 16)
    assert [partition_for(key, 2) for key in keys] == [1, 0, 0, 1]
    assert [partition_for(key, 5) for key in keys] == [2, 3, 1, 2]
    assert partition_for(b"a", 1) == 0


def test_parse_address():
    assert parse_address("127.0.0.1:7000") == ("127.0.0.1", 7000)
    assert parse_address("::1:7000") == ("::1", 7000)
    for bad in ("7000", "host:", ":7000", "host:port", "host:70000"):
        with pytest.raises(ValueError, match="is not \"host:port\""):
            parse_address(bad)


@pytest.mark.parametrize("text,expected", [("127.0.0.1:7000", ("127.0.0.1", 7000)),
                                           ("tcp://h:1", ("h", 1)), ("::1:7000", ("::1", 7000)),
                                           ("[::1]:7000", ("::1", 7000))])
def test_addresses(text, expected):
    assert parse_address(text) == expected


@pytest.mark.parametrize("text", ["", "host", ":7000", "host:", "host:0", "host:65536",
                                  "host:x1", "a b:1", 7000, None])
def test_bad_addresses(text):
    with pytest.raises(BadAddress):
        parse_address(text)
