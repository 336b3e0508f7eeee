"""A replaced master that follows the new one keeps aside, in DATA_DIR/rollback/, the writes
it took that the new master never got, before the new master's snapshot replaces its data.

The end-to-end tests use real parts on loopback: an old master (NodeServer in a thread over an
engine the test owns), a slave of it that is then promoted (a new ReplicationSource with
`forked_from` over the slave's engine), and the old master's engine turned into a Replica with
`former`. The first tests are the pure parts of yaddb.replication.rollback and the state file.
"""
from __future__ import annotations

import base64
import json
import logging
import os
import re
import threading

import pytest
import zmq

from yaddb import Client
from yaddb.errors import CorruptionError
from yaddb.item import encode_item
from yaddb.lsm import Engine
from yaddb.node.handler import NodeHandler
from yaddb.node.server import NodeServer
from yaddb.replication import rollback, slave as slave_module
from yaddb.replication.master import ReplicationSource
from yaddb.replication.slave import Replica
from yaddb.replication.state import (STATE_FILE, ReplicationState, decode_state, encode_state,
                                     load_state, new_history)
from yaddb.supervisor import free_port
from tests.helpers import wait_for

DEADLINE_S = 60.0
TEXT = ("text/plain", "utf-8")


def read_lines(path: str) -> list[dict]:
    with open(path, encoding="utf-8") as file:
        return [json.loads(line) for line in file]


# -- the pure parts ----------------------------------------------------------------------------

def test_fork_point_matches_the_former_history_or_the_one_before_up_to_its_switch():
    former = ReplicationState("now", previous_history="before", switched_at=40)
    assert rollback.fork_point(["now", 55], former) == 55
    assert rollback.fork_point(("now", 0), former) == 0
    assert rollback.fork_point(["before", 40], former) == 40
    assert rollback.fork_point(["before", 30], former) == 30
    assert rollback.fork_point(["before", 41], former) is None  # past where "before" ended
    for other in (None, ["else", 3], ["now"], ["now", -1], ["now", "3"], [7, 3], "now"):
        assert rollback.fork_point(other, former) is None
    assert rollback.fork_point(["now", 5], None) is None
    assert rollback.fork_point([None, 5], ReplicationState()) is None  # no history: no match


def test_last_writes_keep_each_keys_last_write_in_the_order_made():
    writes = [(11, b"a", b"1"), (12, b"b", b"2"), (13, b"a", None), (14, b"c", b"3"),
              (15, b"b", b"again")]
    assert rollback.last_writes(writes) == [(b"a", None, 13), (b"c", b"3", 14),
                                            (b"b", b"again", 15)]
    assert rollback.last_writes([]) == []


def test_differences_are_ours_where_they_differ_and_deletes_where_we_lack_a_key():
    ours = [(b"a", b"same"), (b"b", b"ours"), (b"d", b"only ours")]
    theirs = [[b"a", b"same"], [b"b", b"theirs"], [b"c", b"only theirs"]]
    assert rollback.differences(ours, theirs) == [(b"b", b"ours", None), (b"c", None, None),
                                                  (b"d", b"only ours", None)]
    assert rollback.differences(ours, [list(pair) for pair in ours]) == []


def test_render_shows_items_as_the_http_edge_does():
    kw = dict(exact=True, forked_at=9, history="h1")
    assert rollback.render((b"\x01k", encode_item(*TEXT, "grüße".encode()), 12), **kw) == {
        "key": "016b", "seq": 12, "deleted": False, "content_type": "text/plain",
        "encoding": "utf-8", "value": "grüße", "value_encoding": "utf-8", "exact": True,
        "forked_at": 9, "history": "h1"}
    binary = rollback.render((b"k", encode_item("image/png", "binary", b"\x89PNG\xff"), 3), **kw)
    assert (binary["content_type"], binary["encoding"], binary["value_encoding"]) == \
        ("image/png", "binary", "base64")
    assert base64.b64decode(binary["value"]) == b"\x89PNG\xff"
    deleted = rollback.render((b"k", None, None), exact=False, forked_at=9, history="h1")
    assert (deleted["deleted"], deleted["seq"], deleted["exact"]) == (True, None, False)
    assert deleted["content_type"] is deleted["encoding"] is deleted["value"] is None
    raw = rollback.render((b"k", b"\x09\xff\xfe", 4), **kw)  # not an item: the bytes, no labels
    assert (raw["content_type"], raw["value"]) == (None, base64.b64encode(b"\x09\xff\xfe").decode())


def test_files_are_named_by_epoch_and_utc_time_written_whole_and_counted(tmp_path):
    data_dir = str(tmp_path)
    assert rollback.count(data_dir) == {"files": 0, "entries": 0}
    writes = [(b"a", encode_item(*TEXT, b"1"), 5), (b"b", None, 6)]
    then = 1_700_000_000.0  # 2023-11-14T22:13:20Z
    first = rollback.write_file(data_dir, 4, writes, True, 4, "h", now=then)
    second = rollback.write_file(data_dir, 4, writes[:1], True, 4, "h", now=then)
    assert os.path.basename(first) == "4-20231114T221320Z.jsonl"
    assert os.path.basename(second) == "4-20231114T221320Z-2.jsonl"
    assert set(os.listdir(tmp_path / "rollback")) == {os.path.basename(first),
                                                      os.path.basename(second)}  # no temp file
    lines = read_lines(first)
    assert [(line["key"], line["seq"], line["deleted"]) for line in lines] == \
        [("61", 5, False), ("62", 6, True)]
    assert list(lines[0]) == ["key", "seq", "deleted", "content_type", "encoding", "value",
                              "value_encoding", "exact", "forked_at", "history"]
    (tmp_path / "rollback" / "notes.txt").write_text("a person's notes\n")
    assert rollback.count(data_dir) == {"files": 2, "entries": 3}


def test_the_state_file_keeps_a_former_lineage_and_reads_files_without_it():
    former = ReplicationState("old", previous_history="older", switched_at=12)
    state = ReplicationState(None, 0, "127.0.0.1:9", former=former)
    assert decode_state(encode_state(state)) == state
    old_file = b'{"history": "h", "applied": 3, "master": "127.0.0.1:9"}'
    assert decode_state(old_file) == ReplicationState("h", 3, "127.0.0.1:9")
    for bad in ({"former": 5}, {"former": {"history": 1, "applied": 0, "master": None}},
                {"former": {"history": "x", "applied": 0, "master": None,
                            "former": {"history": "y", "applied": 0, "master": None}}}):
        with pytest.raises(CorruptionError):
            decode_state(json.dumps({"history": None, "applied": 0, "master": None, **bad}).encode())


def test_every_sync_answer_says_where_the_master_forked(tmp_path):
    with Engine(str(tmp_path), fsync="never", compaction="manual") as engine:
        engine.put(b"k", encode_item(*TEXT, b"v"))
        promoted = ReplicationSource(engine, "new", 1 << 20, 0, forked_from=("old", 17))
        answer = promoted.sync(["new", 1, 1 << 20])  # up to date: the log, empty
        assert (answer["mode"], answer["forked_from"]) == ("log", ["old", 17])
        answer = promoted.sync([None, 0, 1 << 20])
        assert (answer["mode"], answer["forked_from"]) == ("snapshot", ["old", 17])
        plain = ReplicationSource(engine, "plain", 1 << 20, 0)
        assert plain.sync([None, 0, 1 << 20])["forked_from"] is None
        assert plain.sync(["plain", 1, 1 << 20])["forked_from"] is None


# -- end to end --------------------------------------------------------------------------------

class MasterNode:
    """A master's event loop in a thread, over an engine the test owns (it outlives the node)."""

    def __init__(self, engine: Engine, lineage: ReplicationState, context: zmq.Context,
                 forked_from=None) -> None:
        self.engine = engine
        port, pub_port = free_port(), free_port()
        self.address = f"127.0.0.1:{port}"
        self.source = ReplicationSource(engine, lineage, 64 << 20, pub_port,
                                        forked_from=forked_from)
        self.server = NodeServer(NodeHandler(engine, "master", source=self.source),
                                 f"tcp://{self.address}", context,
                                 pub_endpoint=f"tcp://127.0.0.1:{pub_port}")
        self.thread = threading.Thread(target=self.server.serve, name="test-master", daemon=True)
        self.thread.start()
        assert self.server.ready.wait(DEADLINE_S)
        self.client = Client(f"tcp://{self.address}", timeout=10.0, context=context, direct=False)

    def stop(self) -> None:
        if self.thread is not None:
            self.client.close()
            self.server.stop()
            self.thread.join(DEADLINE_S)
            assert not self.thread.is_alive(), "the master's loop did not stop"
            self.thread = None


@pytest.fixture
def parts(tmp_path):
    """Makes engines, masters and replicas; stops replicas, then masters, then engines."""
    context = zmq.Context()
    engines: list[Engine] = []
    masters: list[MasterNode] = []
    replicas: list[Replica] = []

    class Parts:
        @staticmethod
        def engine(name: str) -> Engine:
            engines.append(Engine(str(tmp_path / name), fsync="never", compaction="thread",
                                  memtable_bytes=1 << 20))
            return engines[-1]

        @staticmethod
        def master(engine: Engine, lineage: ReplicationState, forked_from=None) -> MasterNode:
            masters.append(MasterNode(engine, lineage, context, forked_from))
            return masters[-1]

        @staticmethod
        def replica(engine: Engine, **options) -> Replica:
            replicas.append(Replica(engine, engine.path, f"127.0.0.1:{free_port()}", context,
                                    **options))
            return replicas[-1]

    try:
        yield Parts
    finally:
        for replica in replicas:
            replica.stop()
        for master in masters:
            master.stop()
        for engine in engines:
            engine.close()
        context.term()


def wait_copy(replica: Replica, master: MasterNode) -> None:
    """Until the replica holds exactly the master's items and says it is up to date."""
    wait_for(lambda: replica.status()["ready"] and replica.state.applied == master.engine.sequence
             and list(replica.engine.items()) == list(master.engine.items()),
             "the replica to hold exactly its master's items", DEADLINE_S)


def fork(parts):
    """An old master with 50 keys, and a slave of it stopped once it holds all of them.
    Returns the old master, its lineage, the slave's engine and where the slave forked."""
    old_lineage = ReplicationState(new_history())
    old = parts.master(parts.engine("old"), old_lineage)
    old.client.mset([(b"key-%03d" % n, b"value %d" % n, *TEXT) for n in range(50)])
    old.client.delete(b"key-040")
    slave_engine = parts.engine("slave")
    slave = parts.replica(slave_engine)
    slave.follow(old.address)
    wait_copy(slave, old)
    slave.stop()
    assert (slave.state.history, slave.state.applied) == (old_lineage.history, old.engine.sequence)
    return old, old_lineage, slave_engine, slave.state.applied


def write_past_fork(old: MasterNode) -> dict:
    """Writes only the old master takes (w=1): {key: (item or None, seq of its last write)}."""
    client, expected = old.client, {}

    def wrote(key, item):
        expected[key] = (item, old.engine.sequence)

    client.set(b"only-old", b"kept aside", *TEXT)
    wrote(b"only-old", encode_item(*TEXT, b"kept aside"))
    client.set(b"key-001", b"\xff\x00 binary", "application/octet-stream", "binary")
    wrote(b"key-001", encode_item("application/octet-stream", "binary", b"\xff\x00 binary"))
    client.delete(b"key-002")
    wrote(b"key-002", None)
    client.set(b"twice", b"first", *TEXT)
    client.set(b"twice", b"second", *TEXT)
    wrote(b"twice", encode_item(*TEXT, b"second"))
    client.mset([(b"batch-a", b"A", *TEXT), (b"batch-b", b"B", *TEXT)])
    wrote(b"batch-a", encode_item(*TEXT, b"A"))
    expected[b"batch-a"] = (expected[b"batch-a"][0], old.engine.sequence - 1)
    wrote(b"batch-b", encode_item(*TEXT, b"B"))
    for key, (item, _) in expected.items():
        assert old.engine.get(key) == item
    return expected


def promote(parts, slave_engine: Engine, old_lineage: ReplicationState, forked_at: int,
            forked_from="match") -> MasterNode:
    """The slave's engine as the new master, which then takes writes of its own."""
    if forked_from == "match":
        forked_from = (old_lineage.history, forked_at)
    new = parts.master(slave_engine, ReplicationState(new_history()), forked_from)
    new.client.set(b"key-003", b"changed on the new master", *TEXT)
    new.client.set(b"only-new", b"new", *TEXT)
    return new


def rollback_lines(data_dir: str) -> dict[str, list[dict]]:
    directory = os.path.join(data_dir, rollback.ROLLBACK_DIR)
    return {name: read_lines(os.path.join(directory, name)) for name in sorted(os.listdir(directory))}


def shown(key: bytes, item, seq, exact: bool, forked_at: int, history: str) -> dict:
    return rollback.render((key, item, seq), exact, forked_at, history)


def test_a_replaced_master_keeps_aside_exactly_the_writes_the_new_master_lacks(parts, caplog):
    caplog.set_level(logging.WARNING, logger="yaddb.replication.slave")
    old, old_lineage, slave_engine, forked_at = fork(parts)
    expected = write_past_fork(old)
    old.stop()  # lost by the router; its engine stays open, as the node's does
    new = promote(parts, slave_engine, old_lineage, forked_at)

    demoted = parts.replica(old.engine, former=old_lineage, epoch=7)
    assert load_state(old.engine.path).former == old_lineage  # a crash now must not forget it
    demoted.follow(new.address, replace_data=True)
    wait_copy(demoted, new)

    files = rollback_lines(old.engine.path)
    (name,) = files
    assert re.fullmatch(r"7-\d{8}T\d{6}Z\.jsonl", name)
    lines = files[name]
    assert sorted(lines, key=lambda line: line["seq"]) == lines, "in the order they were made"
    assert {line["key"]: line for line in lines} == {
        key.hex(): shown(key, item, seq, True, forked_at, old_lineage.history)
        for key, (item, seq) in expected.items()}
    assert {line["key"] for line in lines if line["deleted"]} == {b"key-002".hex()}
    twice = next(line for line in lines if line["key"] == b"twice".hex())
    assert (twice["value"], twice["seq"]) == ("second", expected[b"twice"][1])
    binary = next(line for line in lines if line["key"] == b"key-001".hex())
    assert base64.b64decode(binary["value"]) == b"\xff\x00 binary"

    assert demoted.status()["rolled_back"] == {"files": 1, "entries": len(expected)}
    assert rollback.count(old.engine.path) == {"files": 1, "entries": len(expected)}
    state = load_state(old.engine.path)
    assert (state.former, state.history, state.master) == (None, new.source.history, new.address)
    assert demoted.counts["full_syncs"] == 1
    warnings = [r.getMessage() for r in caplog.records if "ROLLED BACK" in r.getMessage()]
    assert len(warnings) == 1 and f"ROLLED BACK {len(expected)} key(s)" in warnings[0]
    assert os.path.join(old.engine.path, "rollback", name) in warnings[0]


def test_with_its_logs_flushed_it_keeps_each_key_that_differs_not_exactly(parts, monkeypatch):
    monkeypatch.setattr(slave_module, "CATCH_UP_BYTES", 300)  # a snapshot of many chunks
    old, old_lineage, slave_engine, forked_at = fork(parts)
    expected = write_past_fork(old)
    old.engine.flush()  # the logs holding the writes past the fork are gone
    old.client.set(b"after-flush", b"in the log", *TEXT)
    expected[b"after-flush"] = (encode_item(*TEXT, b"in the log"), None)
    assert old.engine.writes_since(forked_at) is None
    old.stop()
    new = promote(parts, slave_engine, old_lineage, forked_at)
    # The new master's own writes differ from ours too: kept as what we held (not exact).
    expected[b"key-003"] = (encode_item(*TEXT, b"value 3"), None)
    expected[b"only-new"] = (None, None)

    demoted = parts.replica(old.engine, former=old_lineage, epoch=3)
    demoted.follow(new.address, replace_data=True)
    wait_copy(demoted, new)

    files = rollback_lines(old.engine.path)
    assert len(files) >= 2, "one file per chunk that differed"
    assert all(re.fullmatch(r"3-\d{8}T\d{6}Z(-\d+)?\.jsonl", name) for name in files)
    lines = [line for name in files for line in files[name]]
    assert sorted(line["key"] for line in lines) == sorted(key.hex() for key in expected)
    assert {line["key"]: line for line in lines} == {
        key.hex(): shown(key, item, None, False, forked_at, old_lineage.history)
        for key, (item, _) in expected.items()}
    assert demoted.status()["rolled_back"] == {"files": len(files), "entries": len(expected)}
    assert rollback.count(old.engine.path) == demoted.status()["rolled_back"]
    assert load_state(old.engine.path).former is None


def test_a_crash_before_the_file_is_written_does_not_forget_it(parts):
    old, old_lineage, slave_engine, forked_at = fork(parts)
    expected = write_past_fork(old)
    old.stop()
    new = promote(parts, slave_engine, old_lineage, forked_at)
    # The old master had restarted after the fork (a new history, the forked one before it),
    # and is demoted, then crashes before it follows: its state file holds the lineage.
    switched_at = expected[b"key-001"][1]
    restarted = ReplicationState(new_history(), previous_history=old_lineage.history,
                                 switched_at=switched_at)
    parts.replica(old.engine, former=restarted, epoch=2)
    saved = load_state(old.engine.path)
    assert (saved.former, saved.history) == (restarted, None)

    again = parts.replica(old.engine, epoch=2)  # after the restart: no lineage given
    assert not again.ready
    again.follow(new.address, replace_data=True)
    wait_copy(again, new)
    lines = [line for lines in rollback_lines(old.engine.path).values() for line in lines]
    assert {line["key"]: line["seq"] for line in lines} == {
        key.hex(): seq for key, (_, seq) in expected.items()}
    assert all(line["exact"] and line["history"] == old_lineage.history for line in lines)
    assert load_state(old.engine.path).former is None


def test_a_new_master_that_did_not_fork_from_us_is_compared_key_by_key(parts, caplog):
    """Several failovers or restarts since: where the new master forked is not known here, so
    every key that differs from its snapshot is kept aside, not exactly, rather than lost."""
    caplog.set_level(logging.WARNING, logger="yaddb.replication.slave")
    old, old_lineage, slave_engine, forked_at = fork(parts)
    expected = write_past_fork(old)
    old.stop()
    new = promote(parts, slave_engine, old_lineage, forked_at, forked_from=None)

    demoted = parts.replica(old.engine, former=old_lineage, epoch=1)
    demoted.follow(new.address, replace_data=True)
    wait_copy(demoted, new)
    lines = [line for lines in rollback_lines(old.engine.path).values() for line in lines]
    assert {line["key"] for line in lines} >= {key.hex() for key in expected}
    assert not any(line["exact"] for line in lines)
    assert demoted.status()["rolled_back"]["entries"] == len(lines)
    assert load_state(old.engine.path).former is None
    assert any("not from this node's writes" in r.getMessage() for r in caplog.records)


def test_a_plain_slave_never_writes_a_rollback_file(parts):
    old, old_lineage, slave_engine, forked_at = fork(parts)
    old.stop()
    new = promote(parts, slave_engine, old_lineage, forked_at)
    # A slave with data of its own that the new master lacks, and no former lineage.
    other = parts.engine("other")
    other.write_batch([(b"key-001", encode_item(*TEXT, b"mine")), (b"extra", b"x")])
    plain = parts.replica(other)
    plain.state.history, plain.state.applied = old_lineage.history, forked_at  # even this
    plain.follow(new.address, replace_data=True)
    wait_copy(plain, new)
    assert not os.path.exists(os.path.join(other.path, rollback.ROLLBACK_DIR))
    assert plain.status()["rolled_back"] == {"files": 0, "entries": 0}
    assert STATE_FILE in os.listdir(other.path) and load_state(other.path).former is None
