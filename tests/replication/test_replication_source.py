"""The master's ReplicationSource on a real engine, no sockets: log catch-up, chunked snapshots,
the slave list, ending with a property test that a slave fed only by sync and chunk answers
copies the master."""
from __future__ import annotations

import tempfile
import threading
from dataclasses import dataclass
from typing import Optional

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from yaddb.errors import BadRequest
from yaddb.lsm import Engine
from yaddb.replication import master as master_module
from yaddb.replication.master import ReplicationSource
from yaddb.replication.messages import Published, decode_published
from yaddb.replication.state import ReplicationState

HISTORY = "0123456789abcdef"


# -- ReplicationSource on a real engine --------------------------------------------------------

def open_engine(path) -> Engine:
    # A small memtable, so the data spans frozen memtables and segments, not only one table.
    return Engine(str(path), fsync="never", compaction="thread", memtable_bytes=2048)


@pytest.fixture
def engine(tmp_path):
    engine = open_engine(tmp_path / "master")
    yield engine
    engine.close()


def write(engine: Engine, source: ReplicationSource, entries: list) -> int:
    """What a master's handler does with a round: apply, then record for the backlog."""
    last = engine.write_batch(entries)
    source.record(last - len(entries) + 1, list(entries))
    return last


def value(n: int, size: int = 60) -> bytes:
    return (b"%d:" % n).ljust(size, b"v")


def fill(engine, source, batches: int = 40, start: int = 0) -> list:
    """Writes in batches of 1 to 3, some deletes; returns every entry in sequence order."""
    log = []
    for n in range(start, start + batches):
        entries = [(b"key-%03d" % ((n * 7 + i) % 50), value(n)) for i in range(n % 3 + 1)]
        if n % 5 == 4:
            entries.append((b"key-%03d" % (n % 50), None))
        write(engine, source, entries)
        log.extend(entries)
    return log


def flatten(batches) -> tuple[int, list]:
    """The first sequence of consecutive batches and their entries as (key, value) tuples."""
    first = batches[0][0]
    entries = []
    for batch_first, batch in batches:
        assert batch_first == first + len(entries), "batches must be consecutive"
        entries.extend((key, item) for key, item in batch)
    return first, entries


def test_sync_with_the_same_history_gives_exactly_the_missing_writes(engine):
    source = ReplicationSource(engine, HISTORY, 1 << 20, 9999)
    log = fill(engine, source, 30)
    assert engine.wait_for_compactions(60)
    assert engine.stats()["segments"] > 0            # older writes in segments,
    log += fill(engine, source, 10, start=30)        # newer ones in the memtable
    seq = engine.sequence
    assert seq == len(log)
    for applied in (0, 1, 17, seq - 1):
        answer = source.sync([HISTORY, applied, 1 << 20])
        assert answer["mode"] == "log" and answer["more"] is False
        assert (answer["history"], answer["seq"], answer["pub_port"]) == (HISTORY, seq, 9999)
        assert flatten(answer["batches"]) == (applied + 1, log[applied:])
    assert source.sync([HISTORY, seq, 1 << 20]) == {
        "history": HISTORY, "seq": seq, "pub_port": 9999, "forked_from": None, "mode": "log",
        "batches": [], "more": False}
    assert source.snapshots_served == 0


def test_a_log_catch_up_in_small_answers_says_more_until_the_end(engine):
    source = ReplicationSource(engine, HISTORY, 1 << 20, 9999)
    log = fill(engine, source)
    applied, got, answers = 3, [], 0
    while True:
        answer = source.sync([HISTORY, applied, 150])
        answers += 1
        assert answer["mode"] == "log"
        first, entries = flatten(answer["batches"])
        assert first == applied + 1
        got.extend(entries)
        applied += len(entries)
        if not answer["more"]:
            break
    assert got == log[3:] and applied == engine.sequence and answers > 5


def drain(source: ReplicationSource, answer: dict, max_bytes: int, between=None) -> list:
    """Every item of a snapshot answer and its chunks; `between()` runs before each chunk."""
    assert answer["mode"] == "snapshot"
    items, done = list(answer["items"]), answer["done"]
    while not done:
        if between is not None:
            between()
        chunk = source.chunk([answer["cursor"]], max_bytes)
        items.extend(chunk["items"])
        done = chunk["done"]
    assert all(type(k) is bytes and type(v) is bytes for k, v in items)
    return [(key, item) for key, item in items]


@pytest.mark.parametrize("case", ["new slave", "other history", "applied beyond the master",
                                  "backlog dropped the writes"])
def test_sync_gives_a_snapshot_when_the_log_cannot_serve(engine, case):
    backlog_bytes = 300 if case == "backlog dropped the writes" else 1 << 20
    source = ReplicationSource(engine, HISTORY, backlog_bytes, 9999)
    fill(engine, source)
    seq = engine.sequence
    history, applied = {"new slave": (None, 0), "other history": ("feedfacefeedface", 5),
                        "applied beyond the master": (HISTORY, seq + 1),
                        "backlog dropped the writes": (HISTORY, 2)}[case]
    answer = source.sync([history, applied, 100])
    assert answer["mode"] == "snapshot"
    assert (answer["history"], answer["seq"], answer["pub_port"]) == (HISTORY, seq, 9999)
    assert drain(source, answer, 100) == list(engine.items())
    assert source.snapshots_served == 1


@pytest.mark.parametrize("where", ["memtable", "segments"])
def test_a_snapshot_in_chunks_is_consistent_as_of_its_sequence(tmp_path, where):
    """Writes between chunks (overwrites, deletes and new keys on both sides of the chunks'
    position; with "segments" also flushes and a compaction that replace what the snapshot
    reads) do not show through: the chunks give every live item as of "seq", once, in order."""
    memtable_bytes = 1 << 20 if where == "memtable" else 2048
    engine = Engine(str(tmp_path / "master"), fsync="never", compaction="thread",
                    memtable_bytes=memtable_bytes)
    try:
        source = ReplicationSource(engine, HISTORY, 1 << 20, 9999)
        for n in range(0, 200, 2):                   # even keys, some to be deleted
            write(engine, source, [(b"key-%03d" % n, value(n))])
        write(engine, source, [(b"key-%03d" % n, None) for n in range(0, 200, 10)])
        if where == "segments":
            engine.flush()                           # part of it in segments, part in memory
        write(engine, source, [(b"key-%03d" % n, value(n, 80)) for n in range(100, 200, 4)])
        expected = list(engine.items())
        deleted = {b"key-%03d" % n for n in range(0, 100, 10)}
        assert deleted and not deleted & {key for key, _ in expected}
        seq = engine.sequence
        answer = source.sync([None, 0, 300])
        assert answer["seq"] == seq and not answer["done"]

        rounds = iter(range(1000))

        def meanwhile():
            n = next(rounds)
            write(engine, source, [(b"key-%03d" % (2 * n), b"overwritten behind"),
                                   (b"key-%03d" % (2 * n + 1), b"new behind"),
                                   (b"key-%03d" % (198 - 2 * n), b"overwritten ahead"),
                                   (b"key-%03d" % (196 - 2 * n), None),
                                   (b"key-%03d" % (197 - 2 * n), b"new ahead"),
                                   (b"a-first", b"new"), (b"z-last", b"new")])
            if where == "segments" and n % 3 == 0:
                engine.flush()
            if where == "segments" and n == 4:
                engine.compact()

        items = drain(source, answer, 300, meanwhile)
        assert next(rounds) > 5, "the snapshot should take several chunks"
        assert items == expected                     # every live item once, in key order, as of seq
        assert engine.sequence > seq and list(engine.items()) != expected
        with pytest.raises(BadRequest):              # a finished snapshot's cursor is gone
            source.chunk([answer["cursor"]])
    finally:
        engine.close()


def test_a_snapshot_of_an_empty_master_is_done_at_once(engine):
    source = ReplicationSource(engine, HISTORY, 1 << 20, 9999)
    answer = source.sync([None, 0, 100])
    assert (answer["mode"], answer["seq"], answer["items"], answer["done"]) == ("snapshot", 0, [], True)


@pytest.mark.parametrize("cursor", [12345, "1", None, [1], b"1"])
def test_chunk_of_an_unknown_cursor_is_a_bad_request(engine, cursor):
    source = ReplicationSource(engine, HISTORY, 1 << 20, 9999)
    with pytest.raises(BadRequest):
        source.chunk([cursor])


@pytest.mark.parametrize("args", [[5, 0, 100], [b"h", 0, 100], [None, -1, 100], [None, "0", 100],
                                  [None, True, 100], [None, 0, 0], [None, 0, 1.5]])
def test_sync_with_bad_arguments_is_a_bad_request(engine, args):
    source = ReplicationSource(engine, HISTORY, 1 << 20, 9999)
    with pytest.raises(BadRequest):
        source.sync(args)


def test_record_and_heartbeat_publish_what_a_slave_decodes(engine):
    source = ReplicationSource(engine, HISTORY, 1 << 20, 9999)
    entries = [(b"a", b"1"), (b"b", None)]
    last = engine.write_batch(entries)
    source.record(last - 1, entries)
    (message,) = map(decode_published, source.publish([(last - 1, entries)]))
    assert message == Published(HISTORY, 1, [[b"a", b"1"], [b"b", None]])
    assert source.backlog.since(0, 1 << 20) == [(1, entries)]
    heartbeat = decode_published(source.heartbeat())
    assert (heartbeat.history, heartbeat.last_seq, heartbeat.entries) == (HISTORY, 2, [])


def test_slaves_heard_from_are_listed_with_their_lag(engine):
    source = ReplicationSource(engine, HISTORY, 1 << 20, 9999)
    fill(engine, source, 10)
    seq = engine.sequence
    assert source.slaves() == []
    assert source.heard_from(["10.0.0.2:7000", HISTORY, 3, True]) == {
        "seq": seq, "history": HISTORY, "pub_port": 9999, "forked_from": None}
    source.heard_from(["10.0.0.1:7000", None, 0, False])
    source.heard_from(["10.0.0.3:7000", "feedfacefeedface", seq + 5, True])
    listed = source.slaves()
    assert [s["address"] for s in listed] == ["10.0.0.1:7000", "10.0.0.2:7000", "10.0.0.3:7000"]
    assert [(s["applied"], s["lag"], s["ready"], s["alive"]) for s in listed] == [
        (0, seq, False, True), (3, seq - 3, True, True), (seq + 5, 0, False, True)]
    write(engine, source, [(b"more", b"x")])
    source.heard_from(["10.0.0.2:7000", HISTORY, seq, True])  # the same slave again, further on
    again = {s["address"]: s for s in source.slaves()}
    assert len(again) == 3 and again["10.0.0.2:7000"]["lag"] == 1
    assert again["10.0.0.1:7000"]["lag"] == seq  # as of its last report


def test_a_silent_slave_is_not_alive_and_later_forgotten(engine, monkeypatch):
    source = ReplicationSource(engine, HISTORY, 1 << 20, 9999)
    source.heard_from(["10.0.0.2:7000", HISTORY, 0, True])
    monkeypatch.setattr(master_module, "SLAVE_ALIVE_S", -1.0)   # any silence is too long
    assert [s["alive"] for s in source.slaves()] == [False]
    monkeypatch.setattr(master_module, "SLAVE_FORGET_S", -1.0)
    assert source.slaves() == []


@pytest.mark.parametrize("args", [[5, HISTORY, 0, True], ["10.0.0.2:7000", HISTORY, "0", True]])
def test_heard_from_with_bad_arguments_is_a_bad_request(engine, args):
    source = ReplicationSource(engine, HISTORY, 1 << 20, 9999)
    with pytest.raises(BadRequest):
        source.heard_from(args)
    assert source.slaves() == []


def test_a_slaves_forced_sync_while_its_engine_flushes_succeeds(tmp_path):
    """A slave saves its position after engine.sync(force=True), whatever its fsync policy,
    while memtables flush in the background (it once hit a closed log: ValueError)."""
    engine = Engine(str(tmp_path / "slave"), fsync="never", compaction="thread",
                    memtable_bytes=16 << 10)
    errors: list = []
    stop = threading.Event()

    def save_positions():
        while not stop.is_set():
            try:
                engine.sync(force=True)
            except Exception as exc:  # any failure is the test's failure
                errors.append(exc)
                return

    saver = threading.Thread(target=save_positions)
    saver.start()
    try:
        for n in range(5000):
            engine.write_batch([(b"key-%05d" % n, b"x" * 100)], sync=False)
            if errors:
                break
    finally:
        stop.set()
        saver.join()
        flushes = engine.stats()["flushes"]
        engine.close()
    assert errors == []
    assert flushes > 10


# -- property: a slave fed by sync and chunk answers ends with the master's content ------------

@dataclass
class Position:
    history: Optional[str] = None
    applied: int = 0


def catch_up(source: ReplicationSource, master: Engine, slave: Engine, position: Position,
             max_bytes: int, meanwhile: list) -> int:
    """Bring `slave` up to date by sync (and chunk) answers alone, the way a slave does: a
    log answer is applied batch by batch; a snapshot replaces the whole content (its items,
    and deletes for every key the slave has that it lacks). The master takes the writes in
    `meanwhile` between snapshot chunks. Returns how many snapshots it took."""
    snapshots = 0
    while True:
        answer = source.sync([position.history, position.applied, max_bytes])
        assert answer["history"] == source.history
        if answer["mode"] == "snapshot":
            snapshots += 1
            assert snapshots < 50, "snapshots without end"
            items = drain(source, answer, max_bytes,
                          lambda: meanwhile and write(master, source, meanwhile.pop(0)))
            keys = [key for key, _ in items]
            assert keys == sorted(set(keys)), "each key once, in key order"
            stale = [(key, None) for key, _ in slave.items() if key not in set(keys)]
            slave.write_batch(items + stale)
            position.history, position.applied = answer["history"], answer["seq"]
            continue
        for first, entries in answer["batches"]:
            assert first == position.applied + 1
            slave.write_batch([(key, item) for key, item in entries])
            position.applied = first + len(entries) - 1
        if not answer["more"]:
            return snapshots


keys = st.sampled_from([b"k%02d" % n for n in range(16)])
batches = st.lists(st.tuples(keys, st.none() | st.binary(max_size=40)), min_size=1, max_size=6)
steps = st.lists(st.one_of(
    st.tuples(st.just("write"), batches),
    st.tuples(st.just("catch up"), st.integers(1, 400), st.lists(batches, max_size=3)),
    # The slave lost its position (a new data dir, or another master's), possibly holding keys
    # the master never had.
    st.tuples(st.just("forget"), st.lists(st.tuples(st.sampled_from([b"k03", b"x1", b"x2", b"zz"]),
                                                    st.binary(max_size=8)), max_size=3)),
    # A slave further on than its master (the master lost its last writes) comes back at once.
    st.tuples(st.just("ahead"), st.integers(1, 10), st.integers(1, 400)),
), max_size=30)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(40, 2000), steps)
def test_a_slave_applying_sync_answers_ends_with_exactly_the_masters_items(backlog_bytes, steps):
    with tempfile.TemporaryDirectory() as directory:
        master, slave = open_engine(f"{directory}/master"), open_engine(f"{directory}/slave")
        try:
            source = ReplicationSource(master, HISTORY, backlog_bytes, 9999)
            position = Position()
            for step in steps:
                if step[0] == "write":
                    write(master, source, step[1])
                elif step[0] == "catch up":
                    meanwhile = list(step[2])
                    catch_up(source, master, slave, position, step[1], meanwhile)
                    assert list(slave.items()) == list(master.items())
                    assert position.applied == master.sequence
                    for entries in meanwhile:       # not taken: no snapshot needed chunks
                        write(master, source, entries)
                elif step[0] == "forget":
                    if step[1]:
                        slave.write_batch(step[1])
                    position = Position()
                else:
                    position.applied = master.sequence + step[1]
                    assert catch_up(source, master, slave, position, step[2], []) == 1
                    assert list(slave.items()) == list(master.items())
            snapshots = catch_up(source, master, slave, position, 1 << 20, [])
            assert list(slave.items()) == list(master.items())
            assert position == Position(HISTORY, master.sequence)
            assert snapshots <= 1
        finally:
            master.close()
            slave.close()


def test_a_slave_of_the_previous_history_goes_on_from_the_log_up_to_where_it_ended(engine):
    """A restarted master has a new history id; a slave of the one before may go on from the
    log if it has no write past the restart point, else (writes the master lost) a snapshot."""
    source = ReplicationSource(engine, ReplicationState("new", previous_history="old",
                                                        switched_at=0), 1 << 20, 0)
    fill(engine, source, batches=10)
    assert source.sync(["old", 0, 1 << 20])["mode"] == "log"
    assert source.sync(["old", 1, 1 << 20])["mode"] == "snapshot"  # a write the master lost
    assert source.sync([None, 0, 1 << 20])["mode"] == "snapshot"   # no history: a new slave
    assert source.sync(["new", 5, 1 << 20])["mode"] == "log"


def test_a_heartbeat_names_the_last_write_published_not_one_kept_back(engine):
    source = ReplicationSource(engine, HISTORY, 1 << 20, 0)
    last = write(engine, source, [(b"a", b"1")])
    source.publish([(last, [(b"a", b"1")])])
    engine.write_batch([(b"b", b"2")])  # applied, but never published (its round's sync failed)
    assert decode_published(source.heartbeat()).last_seq == last == engine.sequence - 1


def test_consecutive_rounds_are_published_as_one_message(engine):
    source = ReplicationSource(engine, HISTORY, 1 << 20, 0)
    batches = [(5, [(b"a", b"1")]), (6, [(b"b", None), (b"c", b"3")]), (10, [(b"d", b"4")])]
    assert [decode_published(m) for m in source.publish(batches)] == [
        Published(HISTORY, 5, [[b"a", b"1"], [b"b", None], [b"c", b"3"]]),
        Published(HISTORY, 10, [[b"d", b"4"]])]
    assert source.published_seq == 10
