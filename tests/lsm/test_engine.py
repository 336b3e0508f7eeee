import os
import threading

import pytest

from yaddb.errors import DataDirLocked, EngineClosed, InvalidKey, ValueTooLarge, YaddbError
from yaddb.limits import MAX_KEY_BYTES
from yaddb.lsm import Engine


def test_put_get_delete_and_sequence_numbers(open_engine):
    engine = open_engine()
    assert engine.sequence == 0
    assert engine.put(b"k", b"v1") == 1
    assert engine.put(b"k", b"v2") == 2
    assert engine.get(b"k") == b"v2"
    assert engine.delete(b"k") == 3
    assert engine.get(b"k") is None
    assert engine.get(b"never") is None
    assert engine.put(b"empty", b"") == 4
    assert engine.get(b"empty") == b""


def test_data_and_sequence_survive_reopen_through_flushes_and_compactions(open_engine, tmp_path):
    engine = open_engine(memtable_bytes=2048)
    for i in range(600):
        engine.put(b"key%04d" % i, b"value%d" % i)
    for i in range(0, 600, 3):
        engine.delete(b"key%04d" % i)
    engine.wait_for_compactions()
    assert engine.stats()["flushes"] > 5 and engine.stats()["compactions"] > 0
    sequence = engine.sequence
    engine.close()
    engine = open_engine(memtable_bytes=2048)
    assert engine.sequence == sequence
    for i in range(600):
        assert engine.get(b"key%04d" % i) == (None if i % 3 == 0 else b"value%d" % i)
    assert engine.put(b"after", b"x") == sequence + 1


def test_compact_drops_overwritten_values_and_tombstones(open_engine):
    engine = open_engine(memtable_bytes=1024, compaction="manual")
    for round_ in range(3):
        for i in range(100):
            engine.put(b"k%03d" % i, b"round%d" % round_)
    for i in range(50):
        engine.delete(b"k%03d" % i)
    engine.flush()
    assert engine.stats()["segments"] > 1
    engine.compact()
    stats = engine.stats()
    assert stats["segments"] == 1
    assert stats["keys_on_disk"] == 50 and stats["tombstones_on_disk"] == 0
    assert dict(engine.items()) == {b"k%03d" % i: b"round2" for i in range(50, 100)}


def test_a_merge_above_the_oldest_segment_keeps_tombstones(open_engine):
    engine = open_engine(compaction="thread", compaction_fanout=100, max_segments=2)
    engine.put(b"k", b"old")
    engine.flush()
    engine.put(b"other", b"x")
    engine.flush()
    engine.delete(b"k")
    engine.flush()  # three segments: the newest two merge, the oldest still holds k
    assert engine.wait_for_compactions(timeout=60)
    stats = engine.stats()
    assert stats["segments"] == 2 and stats["tombstones_on_disk"] == 1
    assert engine.get(b"k") is None
    engine.compact()
    assert engine.stats()["tombstones_on_disk"] == 0 and engine.get(b"k") is None


def test_gets_probe_each_segment_filter_and_the_newest_version_wins(open_engine):
    """Engine.get probes the segments' filters inline, with and without the key filter."""
    engine = open_engine(compaction="manual")
    expected = {}
    for round_ in range(6):  # each round overwrites a third of the keys of the one before
        batch = [(b"key%05d" % i, b"round %d key %d" % (round_, i))
                 for i in range(round_ * 600, round_ * 600 + 900)]
        engine.write_batch(batch)
        engine.flush()
        expected.update(batch)
    assert engine.stats()["segments"] == 6
    absent = [b"key%05d" % i for i in range(4200, 6000)] + [b"other%d" % i for i in range(2000)]
    for key_filter in (engine.key_filter, None):  # None: as while one is built at open
        engine._versions.install_key_filter(key_filter)
        assert {key: engine.get(key) for key in expected} == expected
        assert [key for key in absent if engine.get(key) is not None] == []


def test_compaction_in_a_worker_process(open_engine):
    engine = open_engine(memtable_bytes=2048, compaction="process")
    for i in range(2000):
        engine.put(b"%06d" % i, b"v" * 20)
    engine.delete(b"000007")
    assert engine.wait_for_compactions(timeout=120)
    stats = engine.stats()
    assert stats["compactions"] > 0 and stats["compaction_error"] is None
    assert engine.get(b"000007") is None and engine.get(b"001999") == b"v" * 20
    assert sum(1 for _ in engine.items()) == 1999


def test_write_batch_is_one_sequence_range_and_validates_before_writing(open_engine):
    engine = open_engine()
    engine.put(b"gone", b"x")
    assert engine.write_batch([(b"a", b"1"), (b"b", b"2"), (b"gone", None)]) == 4
    assert [engine.get(k) for k in (b"a", b"b", b"gone")] == [b"1", b"2", None]
    with pytest.raises(InvalidKey):
        engine.write_batch([(b"c", b"3"), (b"", b"4")])
    assert engine.get(b"c") is None and engine.sequence == 4
    with engine.batch() as batch:
        batch.put(b"d", b"5")
        batch.delete(b"a")
    assert engine.get(b"d") == b"5" and engine.get(b"a") is None
    with pytest.raises(RuntimeError):
        with engine.batch() as batch:
            batch.put(b"e", b"6")
            raise RuntimeError("abandon the batch")
    assert engine.get(b"e") is None
    assert engine.write_batch([]) == engine.sequence


@pytest.mark.parametrize("key", [b"", b"x" * (MAX_KEY_BYTES + 1), "text", 42, None])
def test_bad_keys_are_refused_and_nothing_is_written(open_engine, key):
    engine = open_engine()
    for call in (lambda: engine.put(key, b"v"), lambda: engine.get(key), lambda: engine.delete(key)):
        with pytest.raises(InvalidKey) as info:
            call()
        assert isinstance(info.value, YaddbError) and isinstance(info.value, ValueError)
    assert engine.sequence == 0


def test_value_limit(open_engine):
    engine = open_engine(max_value_bytes=1000)
    assert engine.put(b"k" * MAX_KEY_BYTES, b"v" * 1000) == 1
    with pytest.raises(ValueTooLarge, match="limit is 1000"):
        engine.put(b"big", b"v" * 1001)
    with pytest.raises(InvalidKey):
        engine.put(b"k", "not bytes")
    assert engine.get(b"big") is None and engine.sequence == 1
    assert engine.put(bytearray(b"ba"), memoryview(b"mv")) == 2
    assert engine.get(b"ba") == b"mv"


def test_default_value_limit_is_four_mebibytes(open_engine):
    engine = open_engine()
    engine.put(b"k", b"v" * (4 << 20))
    with pytest.raises(ValueTooLarge):
        engine.put(b"k", b"v" * ((4 << 20) + 1))
    assert len(engine.get(b"k")) == 4 << 20


def test_second_open_of_a_directory_is_refused(open_engine, tmp_path):
    open_engine()
    with pytest.raises(DataDirLocked, match="in use by another process"):
        Engine(str(tmp_path / "db"))


def test_closed_engine_refuses_calls(open_engine):
    engine = open_engine()
    engine.close()
    engine.close()  # idempotent
    with pytest.raises(EngineClosed):
        engine.get(b"k")
    with pytest.raises(EngineClosed):
        engine.put(b"k", b"v")


def test_snapshot_is_consistent_while_writes_go_on(open_engine):
    engine = open_engine(memtable_bytes=4096)
    for i in range(300):
        engine.put(b"%04d" % i, b"old")
    snapshot = engine.snapshot()
    for i in range(300):
        engine.put(b"%04d" % i, b"new")
    engine.delete(b"0001")
    engine.flush()
    assert snapshot.seq == 300
    assert dict(snapshot.items()) == {b"%04d" % i: b"old" for i in range(300)}
    assert list(snapshot.items(b"0100", b"0103")) == [(b"0100", b"old"), (b"0101", b"old"), (b"0102", b"old")]
    current = dict(engine.items())
    assert len(current) == 299 and set(current.values()) == {b"new"}


def test_items_are_in_key_order_across_memtable_and_segments(open_engine):
    engine = open_engine(memtable_bytes=1024)
    keys = [os.urandom(6) for _ in range(400)]
    for key in keys:
        engine.put(key, key[::-1])
    assert list(engine.items()) == sorted((k, k[::-1]) for k in set(keys))


def test_concurrent_writers_share_fsyncs_and_lose_nothing(open_engine):
    engine = open_engine(fsync="always", memtable_bytes=8192)

    def writer(thread: int) -> None:
        for i in range(200):
            engine.put(b"t%d-%d" % (thread, i), b"%d" % i)

    threads = [threading.Thread(target=writer, args=(t,)) for t in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert engine.sequence == 800
    assert all(engine.get(b"t%d-%d" % (t, i)) == b"%d" % i for t in range(4) for i in range(200))
    assert 0 < engine.stats()["log_fsyncs"] < 800  # writers that meet share an fsync


@pytest.mark.parametrize("policy", ["always", "interval", "never"])
def test_every_fsync_policy_keeps_data_across_clean_reopen(open_engine, policy):
    engine = open_engine(fsync=policy, fsync_interval_ms=10)
    engine.put(b"k", policy.encode())
    engine.close()
    assert open_engine(fsync=policy).get(b"k") == policy.encode()


def test_bad_options_are_refused(tmp_path):
    with pytest.raises(ValueError, match="fsync must be one of"):
        Engine(str(tmp_path / "a"), fsync="sometimes")
    with pytest.raises(ValueError, match="compaction must be one of"):
        Engine(str(tmp_path / "b"), compaction="later")
