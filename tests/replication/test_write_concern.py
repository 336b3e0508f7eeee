"""Write concern with real run_node.py processes (CONTRACT.md section 7): w=majority and w=all
reply once enough members applied the write; a master whose slaves are silent answers
ReplicationTimeout saying where the write is; --min-slaves-to-write refuses writes; HTTP's ?w=."""
from __future__ import annotations

import json
import signal
import time
import urllib.error
import urllib.request
from contextlib import contextmanager

import pytest

from yaddb import Client
from yaddb.errors import BadRequest, NotApplied, ReplicationTimeout
from tests.helpers import NodeProcess, wait_for

TIMEOUT_S = 1.0  # the masters' --replication-timeout


def slave_of(processes, data_dir, master: NodeProcess) -> NodeProcess:
    return processes.node(data_dir, role=("slave", "--master-host", "127.0.0.1",
                                          "--master-port", str(master.port)))


def holds(node: NodeProcess, key: bytes) -> bool:
    with Client(node.endpoint, timeout=5, direct=False) as client:
        item = client.get(key)
    return item is not None


def listed_slaves(master: NodeProcess) -> list:
    with Client(master.endpoint, timeout=5, direct=False) as client:
        return client.stats()["slaves"]


@contextmanager
def frozen(*nodes: NodeProcess):
    for node in nodes:
        node.child.signal(signal.SIGSTOP)
    try:
        yield
    finally:
        for node in nodes:
            node.child.signal(signal.SIGCONT)


@pytest.fixture
def partition(tmp_path, processes):
    """A master (--replication-timeout 1) with two ready slaves it lists."""
    master = processes.node(tmp_path / "master", "--replication-timeout", str(TIMEOUT_S))
    master.wait_ready()
    slaves = [slave_of(processes, tmp_path / f"slave{i}", master) for i in range(2)]
    for slave in slaves:
        slave.wait_ready()
    wait_for(lambda: sum(s["ready"] and s["alive"] for s in listed_slaves(master)) == 2,
             "the master to list both slaves ready")
    return master, slaves


def test_w_all_and_majority_reply_once_enough_members_hold_the_write(partition):
    master, slaves = partition
    with Client(master.endpoint, timeout=5, direct=False) as client:
        for i in range(20):
            client.set(b"all%d" % i, b"v", w="all")
            assert all(holds(slave, b"all%d" % i) for slave in slaves)  # at once: no waiting
        for i in range(20):
            client.set(b"maj%d" % i, b"v", w="majority")
            assert any(holds(slave, b"maj%d" % i) for slave in slaves)
        client.mset([(b"m%d" % i, b"v") for i in range(50)], w=3)
        assert all(holds(slave, b"m49") for slave in slaves)
        assert client.delete(b"all0", w="all") is True
        assert not any(holds(slave, b"all0") for slave in slaves)


def test_silent_slaves_give_replication_timeout_and_the_write_stays(partition):
    master, slaves = partition
    with Client(master.endpoint, timeout=5, direct=False) as client:
        with frozen(*slaves):
            started = time.monotonic()
            with pytest.raises(ReplicationTimeout, match=r"applied on 1 of 3 members; w=majority needs 2"):
                client.set(b"k", b"v1", w="majority")
            took = time.monotonic() - started
            assert TIMEOUT_S <= took < TIMEOUT_S + 2.0
            assert client.get(b"k").value == b"v1"  # applied on the master, not undone
            assert client.set(b"fast", b"v", w=1) == b"fast"  # w=1 never waits
        # Back: the slaves catch up, and w=majority is answered again.
        client.set(b"k", b"v2", w="majority")
    wait_for(lambda: all(holds(slave, b"k") for slave in slaves), "the slaves to catch up")


def test_w_two_needs_one_slave_only(partition):
    master, slaves = partition
    with Client(master.endpoint, timeout=5, direct=False) as client:
        with frozen(slaves[0]):
            client.set(b"two", b"v", w=2)
            assert holds(slaves[1], b"two")
            with pytest.raises(ReplicationTimeout, match="applied on 2 of 3 members; w=all needs 3"):
                client.set(b"three", b"v", w="all")


def test_bad_write_concerns_are_refused_before_anything_is_applied(partition):
    master, _ = partition
    with Client(master.endpoint, timeout=5, direct=False) as client:
        for bad in (0, -1, "most", "", 2.5):
            with pytest.raises(BadRequest, match="w must be"):
                client.set(b"bad", b"v", w=bad)
        assert client.get(b"bad") is None


def test_min_slaves_to_write_refuses_writes_while_slaves_are_silent(tmp_path, processes):
    master = processes.node(tmp_path / "master", "--min-slaves-to-write", "1",
                            "--min-slaves-max-lag", "2")
    master.wait_ready()
    with Client(master.endpoint, timeout=5, direct=False) as client:
        with pytest.raises(NotApplied, match="min-slaves-to-write"):
            client.set(b"alone", b"v")  # no slave yet: nothing applied
        slave = slave_of(processes, tmp_path / "slave", master)
        slave.wait_ready()
        wait_for(lambda: accepted(client, b"with"), "the master to take writes with its slave")
        with frozen(slave):
            def refused() -> bool:
                try:
                    client.set(b"late", b"v")
                except NotApplied as exc:
                    return "min-slaves-to-write" in str(exc)
                return False
            wait_for(refused, "the master to refuse writes with its slave silent", 30)
        assert client.get(b"alone") is None
        wait_for(lambda: accepted(client, b"after"), "writes to be taken again", 30)


def accepted(client: Client, key: bytes) -> bool:
    """Whether the master took a write of `key` (False if it refused for want of slaves)."""
    try:
        return client.set(key, b"v") == key
    except NotApplied as exc:
        assert "min-slaves-to-write" in str(exc)
        return False


def http(url: str, method: str, path: str, body: dict | None = None) -> tuple[int, dict]:
    request = urllib.request.Request(url + path, method=method,
                                     data=None if body is None else json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=30) as reply:
            return reply.status, json.loads(reply.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def test_http_takes_w_as_a_query_parameter(tmp_path, processes, partition):
    master, slaves = partition
    router = processes.router(tmp_path / "router-data", "--nodes", master.address,
                              "--replication-timeout", str(TIMEOUT_S))
    router.wait_ready()
    item = {"key": "00aa", "content_type": "text/plain", "encoding": "utf-8", "value": "x"}
    assert http(router.url, "PUT", "/set?w=all", item)[0] == 200
    assert all(holds(slave, bytes.fromhex("00aa")) for slave in slaves)
    status, doc = http(router.url, "PUT", "/set?w=most", item)
    assert status == 400 and "w must be" in doc["error"]
    with frozen(*slaves):
        status, doc = http(router.url, "PUT", "/set?w=majority", {**item, "value": "y"})
        assert status == 503 and "applied on 1 of 3 members" in doc["error"], doc
    with Client(master.endpoint, timeout=5, direct=False) as client:
        assert client.get(bytes.fromhex("00aa")).value == b"y"  # applied on the master
    with Client(router.endpoint, timeout=5, direct=False) as client:  # split and gathered
        client.mset([(b"r%d" % i, b"v") for i in range(30)], w="all")
        assert all(holds(slave, b"r29") for slave in slaves)
        with frozen(slaves[1]):
            with pytest.raises(ReplicationTimeout, match="w=all needs 3"):
                client.mdelete([b"r%d" % i for i in range(30)], w="all")
