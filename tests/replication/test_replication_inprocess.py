"""Replication over real sockets inside the test process: a master's NodeServer in a thread,
slaves as Replica threads on their own engines, writes through the Client. Each scenario ends
by comparing the whole content of master and slave."""
from __future__ import annotations

import threading

import pytest
import zmq

from yaddb import Client
from yaddb.errors import NotMaster, Unavailable
from yaddb.item import decode_item, encode_item
from yaddb.lsm import Engine
from yaddb.node.handler import NodeHandler
from yaddb.node.server import NodeServer
from yaddb.replication import slave as slave_module
from yaddb.replication.master import ReplicationSource
from yaddb.replication.messages import decode_published
from yaddb.replication.slave import Replica
from yaddb.replication.state import ReplicationState, load_state, new_history, save_state
from yaddb.transport.protocol import decode_reply, encode_request
from tests.helpers import free_port, wait_for

DEADLINE_S = 60.0


def open_engine(directory) -> Engine:
    # A small memtable, so both sides hold segments as well as memtables.
    return Engine(str(directory), fsync="never", compaction="thread", memtable_bytes=16 << 10)


class Master:
    """A master node's event loop in a thread: engine, replication source, handler, server."""

    def __init__(self, directory, context: zmq.Context, server_class=NodeServer) -> None:
        self.engine = open_engine(directory)
        self.port, pub_port = free_port(), free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.source = ReplicationSource(self.engine, new_history(), 64 << 20, pub_port)
        self.handler = NodeHandler(self.engine, "master", source=self.source)
        self.server = server_class(self.handler, f"tcp://{self.address}", context,
                                   pub_endpoint=f"tcp://127.0.0.1:{pub_port}")
        self.thread = threading.Thread(target=self.server.serve, name="test-master", daemon=True)
        self.thread.start()
        assert self.server.ready.wait(DEADLINE_S)
        self.client = Client(f"tcp://{self.address}", timeout=10.0, context=context, direct=False)

    def close(self) -> None:
        self.client.close()
        self.server.stop()
        self.thread.join(DEADLINE_S)
        assert not self.thread.is_alive(), "the master's loop did not stop"
        self.engine.close()


class Slave:
    """A slave's engine and Replica thread (no server of its own: these tests read its engine)."""

    def __init__(self, directory, context: zmq.Context) -> None:
        self.directory = str(directory)
        self.context = context
        self.engine = open_engine(directory)
        self.replica = Replica(self.engine, self.directory, f"127.0.0.1:{free_port()}", context)

    def restart(self) -> None:
        """Stop and close everything, then open the same data dir again (not following yet)."""
        self.close()
        self.engine = open_engine(self.directory)
        self.replica = Replica(self.engine, self.directory, self.replica.address, self.context)

    def close(self) -> None:
        self.replica.stop()
        self.engine.close()


@pytest.fixture
def nodes(tmp_path):
    """Starts masters and slaves; stops the slaves first, then the masters, then the context."""
    context = zmq.Context()
    masters: list[Master] = []
    slaves: list[Slave] = []

    class Nodes:
        @staticmethod
        def master(**options) -> Master:
            masters.append(Master(tmp_path / f"master{len(masters)}", context, **options))
            return masters[-1]

        @staticmethod
        def slave() -> Slave:
            slaves.append(Slave(tmp_path / f"slave{len(slaves)}", context))
            return slaves[-1]

    try:
        yield Nodes
    finally:
        for slave in slaves:
            slave.close()
        for master in masters:
            master.close()
        context.term()


def in_sync(master: Master, slave: Slave) -> bool:
    """The slave holds exactly the master's items, and knows it is up to date."""
    status = slave.replica.status()
    return (status["ready"] and status["applied"] == master.engine.sequence and status["lag"] == 0
            and list(slave.engine.items()) == list(master.engine.items()))


def wait_in_sync(master: Master, slave: Slave) -> None:
    wait_for(lambda: in_sync(master, slave), "the slave to hold exactly the master's items",
             DEADLINE_S)
    assert list(slave.engine.items()) == list(master.engine.items())


def follow(master: Master, slave: Slave) -> None:
    slave.replica.follow(master.address)
    wait_for(lambda: slave.replica.ready, "the slave's first sync", DEADLINE_S)


def test_writes_and_deletes_replicate(nodes):
    master, slave = nodes.master(), nodes.slave()
    follow(master, slave)
    client = master.client
    for n in range(60):
        client.set(b"key-%03d" % n, b"v%d-" % n * 50)
    client.mset([(b"batch-%03d" % n, "text %d" % n) for n in range(200)])
    for n in range(0, 60, 3):
        assert client.delete(b"key-%03d" % n) is True
    assert client.mdelete([b"batch-%03d" % n for n in range(0, 200, 7)] + [b"never"]) == \
        [True] * 29 + [False]
    client.set(b"key-001", b"overwritten")
    client.mset([(b"key-000", b"back again"), (b"key-002", b"new")])
    wait_in_sync(master, slave)

    items = dict(slave.engine.items())
    assert len(items) == 60 - 20 + 1 + 200 - 29
    assert decode_item(items[b"key-000"]).value == b"back again"
    assert decode_item(items[b"key-001"]).value == b"overwritten"
    assert b"key-003" not in items and b"batch-007" not in items
    assert decode_item(items[b"batch-001"]) == ("text/plain", "utf-8", b"text 1")
    assert slave.engine.stats()["segments"] + slave.engine.stats()["frozen_memtables"] > 0
    status = slave.replica.status()
    assert (status["lag"], status["ready"], status["master_seq"]) == (0, True, master.engine.sequence)
    assert (status["full_syncs"], status["gaps"]) == (1, 0)   # the first sync only; no drops
    assert status["history"] == master.source.history
    listed = wait_for(lambda: [s for s in master.source.slaves()
                               if s["lag"] == 0 and s["ready"] and s["alive"]],
                      "the master to list the slave as up to date", DEADLINE_S)
    assert [s["address"] for s in listed] == [slave.replica.address]


class DroppingServer(NodeServer):
    """A real NodeServer whose PUB loses exactly one log message: the `drop`-th published (the
    first write after a quiet spell goes out alone, the next ones within a millisecond merged)."""

    drop = 2

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.log_messages = 0
        self.dropped: list[bytes] = []

    def _send_published(self, pub: zmq.Socket, message: bytes) -> None:
        if decode_published(message).entries:  # a log message, not a heartbeat
            self.log_messages += 1
            if self.log_messages == self.drop:
                self.dropped.append(message)
                return
        super()._send_published(pub, message)


@pytest.mark.parametrize("writes", [20, 5], ids=["a later write shows the gap",
                                                 "only a heartbeat shows the gap"])
def test_a_dropped_update_is_repaired_from_the_backlog(nodes, writes):
    master, slave = nodes.master(server_class=DroppingServer), nodes.slave()
    follow(master, slave)
    for n in range(writes):
        master.client.set(b"key-%03d" % n, b"value %d" % n)
    wait_in_sync(master, slave)

    (dropped,) = [decode_published(m) for m in master.server.dropped]
    on_slave = dict(slave.engine.items())
    assert dropped.entries and all(on_slave[key] == item for key, item in dropped.entries)
    counts = slave.replica.counts
    assert counts["gaps"] >= 1
    assert counts["full_syncs"] == 1, "the gap must be repaired from the backlog, not a snapshot"
    assert master.source.snapshots_served == 1


def test_a_restarted_slave_resumes_from_its_saved_position(nodes, monkeypatch):
    monkeypatch.setattr(slave_module, "CATCH_UP_BYTES", 2000)  # the catch-up takes many answers
    master, slave = nodes.master(), nodes.slave()
    follow(master, slave)
    master.client.mset([(b"key-%03d" % n, b"first %d" % n) for n in range(100)])
    wait_in_sync(master, slave)
    # Its position reaches the disk within REPORT_EVERY_S.
    # Its data numbers the writes as the master did (aligned), as the failover needs.
    wait_for(lambda: load_state(slave.directory) == ReplicationState(
        master.source.history, master.engine.sequence, master.address, aligned=True),
        "the slave to save its position", DEADLINE_S)

    slave.close()
    at_stop = master.engine.sequence
    for n in range(0, 100, 4):
        master.client.delete(b"key-%03d" % n)
    for n in range(50, 150):
        master.client.set(b"key-%03d" % n, b"second %d" % n)
    master.client.mdelete([b"key-%03d" % n for n in range(1, 40, 2)])

    slave.restart()
    # It holds a whole (stale) copy, so it may serve reads before it reconnects.
    assert slave.replica.ready and slave.replica.state.applied == at_stop
    assert dict(slave.engine.items())[b"key-000"] is not None
    follow(master, slave)
    wait_in_sync(master, slave)

    items = dict(slave.engine.items())
    assert not any(b"key-%03d" % n in items for n in range(0, 50, 4))  # 52.. were set again
    assert decode_item(items[b"key-052"]).value == b"second 52"
    assert not any(b"key-%03d" % n in items for n in range(1, 40, 2))
    assert decode_item(items[b"key-149"]).value == b"second 149"
    assert decode_item(items[b"key-002"]).value == b"first 2"
    counts = slave.replica.counts
    assert counts["full_syncs"] == 0, "a restart with its data and position needs no snapshot"
    assert counts["catch_ups"] >= 1
    assert master.source.snapshots_served == 1  # the slave's very first sync only


@pytest.mark.parametrize("before", ["it followed another master", "it had data of its own"])
def test_a_full_sync_removes_keys_the_master_does_not_have(nodes, monkeypatch, before):
    # The first snapshot answer small, so the snapshot comes in several chunks (the later
    # ones are the master's CHUNK_BYTES, 1 MiB; the data is bigger than that).
    monkeypatch.setattr(slave_module, "CATCH_UP_BYTES", 2000)
    master, slave = nodes.master(), nodes.slave()
    big = b"x" * (40 << 10)
    for start in range(0, 40, 10):
        master.client.mset([(b"key-%03d" % n, big + b"%d" % n) for n in range(start, start + 10)])
    master.client.mset([(b"key-%03d" % n, b"small %d" % n) for n in range(40, 100)])
    # Stale keys before, between and after the master's keys, across every chunk's range.
    stale = [b"a-stale", b"key-%03d-stale" % 5, b"key-%03d-stale" % 35, b"key-%03d-stale" % 70,
             b"zz-stale"] + [b"key-%03d" % n for n in range(100, 120)]
    slave.engine.write_batch([(key, b"stale") for key in stale] + [(b"key-050", b"stale value")])
    if before == "it followed another master":
        save_state(slave.directory, ReplicationState("feedfacefeedface", 3, "127.0.0.1:1"))
        slave.restart()
        assert slave.replica.ready  # a whole copy of the other master's data, until it follows
    follow(master, slave)
    wait_in_sync(master, slave)

    items = dict(slave.engine.items())
    assert not set(stale) & set(items)
    assert decode_item(items[b"key-050"]).value == b"small 50"
    assert len(items) == 100
    assert slave.replica.counts["full_syncs"] == 1
    assert load_state(slave.directory).history == master.source.history


def test_a_slave_refuses_writes_and_until_ready_reads(tmp_path):
    context = zmq.Context()
    engine = open_engine(tmp_path / "slave")
    try:
        engine.put(b"k", encode_item("text/plain", "utf-8", b"v"))
        replica = Replica(engine, str(tmp_path / "slave"), "127.0.0.1:1", context)
        handler = NodeHandler(engine, "slave", replica=replica)

        def call(op, args):
            [frame] = handler.handle([encode_request(7, op, args)])
            reply = decode_reply(frame)
            assert reply.request_id == 7
            return reply

        for op, args in [("set", [b"k", encode_item("text/plain", "utf-8", b"new")]),
                         ("del", [b"k"]), ("mset", [[[b"a", encode_item("a/b", "c", b"d")]]]),
                         ("mdel", [[b"k"]])]:
            with pytest.raises(NotMaster, match="I am not a master"):
                call(op, args).result()
        assert dict(engine.items()) == {b"k": encode_item("text/plain", "utf-8", b"v")}
        assert engine.sequence == 1
        assert not replica.ready
        for op, args in [("get", [b"k"]), ("mget", [[b"k"]])]:
            with pytest.raises(Unavailable):
                call(op, args).result()
        assert call("ping", []).result() == "PONG"
        with pytest.raises(NotMaster):  # nobody can replicate from a slave
            call("sync", [None, 0, 1000]).result()
        assert call("stats", []).result()["replication"]["ready"] is False

        # Once the slave's data is a whole copy (its saved state says so), it serves reads.
        save_state(str(tmp_path / "slave"), ReplicationState("0123456789abcdef", 1, "127.0.0.1:2"))
        ready = Replica(engine, str(tmp_path / "slave"), "127.0.0.1:1", context)
        handler = NodeHandler(engine, "slave", replica=ready)
        assert ready.ready
        assert decode_item(call("get", [b"k"]).result()).value == b"v"
        assert call("mget", [[b"k", b"none"]]).result() == [encode_item("text/plain", "utf-8", b"v"), None]
        with pytest.raises(NotMaster, match="I am not a master"):
            call("set", [b"k", encode_item("text/plain", "utf-8", b"new")]).result()
    finally:
        engine.close()
        context.term()
