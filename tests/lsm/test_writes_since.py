"""Engine.writes_since: the writes after a sequence number, read back from the logs the engine
still holds, or None when those logs no longer reach back that far."""
import os
import shutil
import threading
import time

import pytest

from yaddb.errors import EngineClosed
from yaddb.lsm import files


def test_every_write_after_seq_with_deletes_as_none(open_engine):
    engine = open_engine(compaction="manual")
    engine.put(b"a", b"1")                                    # 1
    engine.put(b"b", b"2")                                    # 2
    engine.delete(b"a")                                       # 3
    engine.write_batch([(b"c", b"3"), (b"b", None), (b"d", b"")])  # 4, 5, 6
    engine.put(b"a", b"again")                                # 7

    assert engine.writes_since(2) == [(3, b"a", None), (4, b"c", b"3"), (5, b"b", None),
                                      (6, b"d", b""), (7, b"a", b"again")]
    assert engine.writes_since(0)[:2] == [(1, b"a", b"1"), (2, b"b", b"2")]
    assert engine.writes_since(5) == [(6, b"d", b""), (7, b"a", b"again")]  # mid-batch
    assert engine.writes_since(7) == []
    assert engine.writes_since(99) == []


def test_after_a_flush_older_writes_are_not_exact(open_engine, tmp_path):
    engine = open_engine(compaction="manual")
    for n in range(10):
        engine.put(b"k%d" % n, b"v%d" % n)
    engine.flush()  # writes 1..10 move to a segment and their log is deleted
    engine.put(b"later", b"x")
    engine.delete(b"k0")

    assert [n for n in os.listdir(tmp_path / "db") if files.parse_name(n)
            and files.parse_name(n)[0] == "wal"] == [files.wal_name(engine._wal.number)]
    assert engine.writes_since(0) is None
    assert engine.writes_since(9) is None
    assert engine.writes_since(10) == [(11, b"later", b"x"), (12, b"k0", None)]
    engine.flush()
    assert engine.writes_since(10) is None
    assert engine.writes_since(12) == []


def test_frozen_memtables_logs_are_read_too(open_engine):
    engine = open_engine(compaction="manual", memtable_bytes=300)
    release = threading.Event()
    flush = engine._maintenance._flush

    def held_flush(table):  # frozen tables stay frozen, their logs kept, until released
        release.wait()
        flush(table)

    engine._maintenance._flush = held_flush
    try:
        n = 0
        while len(engine._versions.view[1]) < 2:
            n += 1
            engine.put(b"key-%02d" % n, b"x" * 20)
        engine.put(b"last", b"y")
        assert sum(len(t.wal_numbers) for t in engine._versions.view[1]) == 2
        assert [seq for seq, _, _ in engine.writes_since(0)] == list(range(1, n + 2))
        assert engine.writes_since(n)[-1] == (n + 1, b"last", b"y")
    finally:
        release.set()
    engine._maintenance.wait_idle(flushes_only=True)
    assert engine.writes_since(0) is None
    assert engine.writes_since(n) == [(n + 1, b"last", b"y")]


def test_a_crash_leaves_the_logs_so_the_answer_is_still_exact(open_engine, tmp_path):
    engine = open_engine(compaction="manual", fsync="always")
    engine.put(b"a", b"1")
    engine.write_batch([(b"b", b"2"), (b"a", None)])
    crashed = tmp_path / "crashed"  # the data dir as a kill -9 would leave it
    shutil.copytree(tmp_path / "db", crashed, ignore=shutil.ignore_patterns(files.LOCK))
    reopened = open_engine(crashed, compaction="manual")
    assert reopened.writes_since(0) == [(1, b"a", b"1"), (2, b"b", b"2"), (3, b"a", None)]
    reopened.put(b"c", b"3")
    assert reopened.writes_since(2) == [(3, b"a", None), (4, b"c", b"3")]


def test_a_clean_close_flushes_so_the_reopened_engine_says_none(open_engine, tmp_path):
    engine = open_engine(compaction="manual")
    engine.put(b"a", b"1")
    engine.close()
    reopened = open_engine(compaction="manual")
    assert reopened.writes_since(0) is None
    assert reopened.writes_since(1) == []


def test_answers_stay_whole_while_writes_rotate_and_flush(open_engine):
    engine = open_engine(memtable_bytes=2048, fsync="never")
    stop = threading.Event()
    errors: list[BaseException] = []

    def write() -> None:
        try:
            n = 0
            while not stop.is_set():
                n += 1
                engine.put(b"key-%05d" % (n % 500), b"value-%d" % n)
                if n % 7 == 0:
                    engine.delete(b"key-%05d" % (n % 500))
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    writer = threading.Thread(target=write)
    writer.start()
    answers = exact = 0
    try:
        deadline = time.monotonic() + 60
        while answers < 300 or exact < 20 or engine.stats()["flushes"] < 5:
            assert time.monotonic() < deadline, (answers, exact, engine.stats()["flushes"])
            since = max(0, engine.sequence - 40)
            result = engine.writes_since(since)
            answers += 1
            if result is None:
                continue
            exact += 1
            assert [seq for seq, _, _ in result] == list(range(since + 1, since + 1 + len(result)))
            assert result, "there was at least one write after `since`"
            for seq, key, value in result:
                # Each write's content follows from its number: the writer's n is recoverable
                # from its value, and a delete is a seq whose write was the put before it.
                if value is not None:
                    n = int(value.split(b"-")[1])
                    assert key == b"key-%05d" % (n % 500)
    finally:
        stop.set()
        writer.join()
    assert not errors


def test_bad_seq_and_closed_engine(open_engine):
    engine = open_engine(compaction="manual")
    with pytest.raises(ValueError):
        engine.writes_since(-1)
    engine.close()
    with pytest.raises(EngineClosed):
        engine.writes_since(0)


def test_a_slave_numbers_writes_as_its_master_and_skipped_numbers_are_no_gap(open_engine, tmp_path):
    """write_batch(first_seq=) numbers from there when above the latest, else takes the next
    numbers; advance_sequence jumps; writes_since stays exact across skipped numbers, and
    the numbers survive a restart (from the log)."""
    engine = open_engine(compaction="manual")
    assert engine.write_batch([(b"a", b"1"), (b"b", b"2")], sync=False, first_seq=10) == 11
    assert engine.write_batch([(b"c", b"3")], first_seq=5) == 12  # below: the next number
    engine.advance_sequence(20)
    engine.advance_sequence(15)  # never backwards
    assert engine.put(b"d", b"4") == 21
    assert engine.writes_since(0) == [(10, b"a", b"1"), (11, b"b", b"2"), (12, b"c", b"3"),
                                      (21, b"d", b"4")]
    assert engine.writes_since(12) == [(21, b"d", b"4")]
    engine.close()
    again = open_engine(tmp_path / "db", compaction="manual")
    assert again.sequence == 21
    assert again.get(b"b") == b"2"
