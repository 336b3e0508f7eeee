import os

import pytest

from yaddb.lsm import key_filter as key_filters

SMALL = 64  # MIN_CAPACITY patched in this process: the filter fills after a few flushes
# A filter is built by key_filter.build: capacity max(MIN_CAPACITY, 2 * keys it read). The
# floor is read in the engine's process and sent to the worker process with each build, so
# the patch reaches both compaction modes.


def _fill(engine, count, prefix=b"k"):
    for i in range(count):
        engine.put(b"%s%05d" % (prefix, i), b"v%d" % i)


@pytest.mark.parametrize("compaction", ["thread", "process"])
def test_the_key_filter_follows_flushes_and_rebuilds_without_losing_a_key(
        open_engine, monkeypatch, compaction):
    monkeypatch.setattr(key_filters, "MIN_CAPACITY", SMALL)  # rebuilds after a few flushes
    engine = open_engine(memtable_bytes=2048, compaction=compaction)
    first = engine.key_filter
    assert first is not None and first.capacity == SMALL
    _fill(engine, 1500)
    assert engine.wait_for_compactions(timeout=120)
    assert engine.stats()["key_filter_error"] is None
    rebuilt = engine.key_filter
    assert rebuilt is not first and rebuilt.capacity >= 2 * SMALL
    assert rebuilt.count >= engine.stats()["keys_on_disk"]
    assert rebuilt.count <= rebuilt.capacity  # idle, so not full: else a rebuild would be due
    # Built from n keys (more than SMALL: the filter was full), plus keys flushed meanwhile.
    assert 2 * SMALL < rebuilt.capacity <= 2 * rebuilt.count and rebuilt.capacity % 2 == 0
    assert all(engine.get(b"k%05d" % i) == b"v%d" % i for i in range(1500))
    # Absent keys: nearly all are turned away by the one filter.
    absent = [b"absent%05d" % i for i in range(2000)]
    assert all(engine.get(key) is None for key in absent)
    passed = sum(rebuilt.bloom.may_contain(key) for key in absent)
    assert passed < 2000 * 0.05


@pytest.mark.parametrize("compaction", ["thread", "process"])
def test_a_filter_built_at_open_is_sized_for_twice_the_keys_on_disk(
        open_engine, monkeypatch, tmp_path, compaction):
    monkeypatch.setattr(key_filters, "MIN_CAPACITY", SMALL)
    engine = open_engine(memtable_bytes=2048, compaction=compaction)
    _fill(engine, 1500)
    engine.close()  # flushes the memtable and saves the filter
    (tmp_path / "db" / key_filters.FILE_NAME).unlink()  # so the reopen builds one from the segments
    engine = open_engine(memtable_bytes=2048, compaction=compaction)
    assert engine.wait_for_compactions(timeout=120)
    assert engine.stats()["key_filter_error"] is None
    assert engine.stats()["keys_on_disk"] == 1500  # distinct keys, no deletes: merges keep all
    built = engine.key_filter
    assert built.count == 1500
    assert built.capacity == max(SMALL, 2 * 1500)
    assert all(engine.get(b"k%05d" % i) == b"v%d" % i for i in range(1500))


def test_a_clean_shutdown_saves_the_filter_and_a_reopen_takes_it(open_engine, tmp_path):
    engine = open_engine(memtable_bytes=2048)
    _fill(engine, 400)
    engine.close()
    path = tmp_path / "db" / key_filters.FILE_NAME
    assert path.exists()
    engine = open_engine(memtable_bytes=2048)
    assert not path.exists()  # taken: it no longer describes the disk once the engine runs
    assert engine.key_filter is not None and not engine.stats()["key_filter_building"]
    assert engine.key_filter.count >= 400
    assert all(engine.get(b"k%05d" % i) == b"v%d" % i for i in range(400))


def test_a_filter_for_other_segments_or_a_damaged_one_is_rebuilt(open_engine, tmp_path):
    engine = open_engine(memtable_bytes=2048)
    _fill(engine, 400)
    engine.close()
    path = tmp_path / "db" / key_filters.FILE_NAME
    saved = path.read_bytes()
    for damaged in (saved[:-1] + bytes([saved[-1] ^ 1]), b"junk", saved[:20]):
        path.write_bytes(damaged)
        engine = open_engine(memtable_bytes=2048)
        assert engine.wait_for_compactions(timeout=60)
        assert engine.key_filter is not None and engine.key_filter.count >= 400
        assert all(engine.get(b"k%05d" % i) == b"v%d" % i for i in range(400))
        engine.close()
    # A filter saved for another set of segments must not be used: it could miss keys.
    engine = open_engine(memtable_bytes=2048)
    _fill(engine, 200, prefix=b"new")
    engine.close()
    path.write_bytes(saved)  # the filter from before the new keys were flushed
    engine = open_engine(memtable_bytes=2048)
    assert engine.wait_for_compactions(timeout=60)
    assert all(engine.get(b"new%05d" % i) == b"v%d" % i for i in range(200))
    assert os.listdir(tmp_path / "db").count(key_filters.FILE_NAME) == 0
