"""Replication between real run_node.py processes: late joiners, crashes and restarts on either
side, deletes; each scenario ends by comparing the whole content of master and slave, read
from their data dirs once the processes have stopped."""
from __future__ import annotations

import json
import shutil
import signal
import threading
import urllib.error
import urllib.request

import pytest

from yaddb import Client
from yaddb.errors import Unavailable, YaddbError
from yaddb.lsm import Engine
from tests.helpers import NodeProcess, Processes, free_port, wait_for


def start_master(processes: Processes, data_dir, **kwargs) -> NodeProcess:
    return processes.node(data_dir, "--fsync", "interval", **kwargs).wait_ready()


def start_slave(processes: Processes, data_dir, master: NodeProcess | None, **kwargs) -> NodeProcess:
    role = ("slave",) if master is None else \
        ("slave", "--master-host", "127.0.0.1", "--master-port", str(master.port))
    return processes.node(data_dir, "--fsync", "interval", role=role, **kwargs).wait_ready()


def master_and_slave(processes, tmp_path, writes: int, delete_every: int = 0) -> tuple[NodeProcess, NodeProcess]:
    """A master with `writes` keys written, and a slave in sync with it."""
    master = start_master(processes, tmp_path / "master")
    slave = start_slave(processes, tmp_path / "slave", master)
    write(master, 0, writes, delete_every)
    wait_for(lambda: in_sync(master, slave), "the slave to catch up")
    return master, slave


def replication(slave: NodeProcess) -> dict:
    with Client(slave.endpoint, timeout=5) as client:
        return client.stats()["replication"]


def in_sync(master: NodeProcess, slave: NodeProcess) -> bool:
    with Client(master.endpoint, timeout=5) as client:
        seq = client.stats()["sequence"]
    state = replication(slave)
    return state["ready"] and state["applied"] == seq


def write(master: NodeProcess, start: int, count: int, delete_every: int = 0) -> None:
    """Keys start..start+count in batches of 100; then deletes every delete_every-th key."""
    with Client(master.endpoint, timeout=10, direct=False) as client:
        for first in range(start, start + count, 100):
            client.mset([(b"key%06d" % i, b"value %d" % i) for i in range(first, min(first + 100, start + count))])
        if delete_every:
            client.mdelete([b"key%06d" % i for i in range(start, start + count, delete_every)])


def contents(*nodes: NodeProcess) -> list[dict]:
    """Stop the nodes and read every item from each one's data dir."""
    out = []
    for node in nodes:
        assert node.stop() == 0, node.log()
        with Engine(str(node.data_dir)) as engine:
            out.append(dict(engine.items()))
    return out


def assert_same_content(master: NodeProcess, slave: NodeProcess, expected_keys: int) -> None:
    wait_for(lambda: in_sync(master, slave), "the slave to catch up with its master")
    on_master, on_slave = contents(master, slave)
    assert len(on_master) == expected_keys
    assert on_slave == on_master


def test_a_late_joiner_after_10k_writes_gets_everything_and_then_the_new_writes(tmp_path, processes):
    master = start_master(processes, tmp_path / "master")
    write(master, 0, 10_000, delete_every=10)
    slave = start_slave(processes, tmp_path / "slave", master)
    wait_for(lambda: in_sync(master, slave), "the late joiner to catch up")
    assert replication(slave)["full_syncs"] == 1
    write(master, 10_000, 500, delete_every=5)
    wait_for(lambda: in_sync(master, slave), "the new writes and deletes to reach the slave")
    with Client(slave.endpoint, timeout=5) as client:
        assert client.get(b"key010499").value == b"value 10499"
        assert client.get(b"key000010") is None  # deleted before the slave joined
        assert client.get(b"key010000") is None  # deleted after
    assert_same_content(master, slave, 9_000 + 400)


def test_a_slave_killed_mid_stream_resumes_from_where_it_was(tmp_path, processes):
    master, slave = master_and_slave(processes, tmp_path, 2_000)
    writer = threading.Thread(target=write, args=(master, 2_000, 6_000, 3))
    writer.start()
    try:
        wait_for(lambda: replication(slave)["applied"] > 2_500, "the slave to apply some of the stream")
        slave.kill()
    finally:
        writer.join()
    slave = start_slave(processes, tmp_path / "slave", master)
    wait_for(lambda: in_sync(master, slave), "the restarted slave to catch up")
    assert replication(slave)["full_syncs"] == 0  # from its saved position, not a snapshot
    assert_same_content(master, slave, 8_000 - 2_000)


def test_a_master_restarted_while_its_slave_runs_keeps_it_in_sync(tmp_path, processes):
    master, slave = master_and_slave(processes, tmp_path, 1_000, delete_every=4)
    master.kill(signal.SIGKILL)
    with Client(slave.endpoint, timeout=5) as client:  # the slave serves reads meanwhile
        assert client.get(b"key000001").value == b"value 1"
    master = start_master(processes, tmp_path / "master", port=master.port)
    write(master, 1_000, 1_000, delete_every=4)
    wait_for(lambda: in_sync(master, slave), "the slave to follow the restarted master")
    assert replication(slave)["full_syncs"] == 1  # the first one only: it went on from the log
    assert_same_content(master, slave, 1_500)


def test_a_slave_with_writes_its_master_lost_converges_on_the_masters_new_writes(tmp_path, processes):
    """A master that loses its last writes (a power cut under --fsync interval: here its data
    dir is put back as it was before them) and then writes past that point: the slave must not
    keep the lost writes as if they were the new ones with the same sequence numbers."""
    master, slave = master_and_slave(processes, tmp_path, 100)
    master.stop()
    shutil.copytree(tmp_path / "master", tmp_path / "master-before")
    master = start_master(processes, tmp_path / "master", port=master.port)
    write(master, 100, 50)  # the writes to be lost; the slave gets them
    wait_for(lambda: in_sync(master, slave), "the slave to get the writes to be lost")
    slave.stop()
    master.stop()
    shutil.rmtree(tmp_path / "master")
    shutil.copytree(tmp_path / "master-before", tmp_path / "master")
    master = start_master(processes, tmp_path / "master", port=master.port)
    with Client(master.endpoint, timeout=5, direct=False) as client:  # other writes, same numbers
        client.mset([(b"other%03d" % i, b"x") for i in range(80)])
    slave = start_slave(processes, tmp_path / "slave", master)
    assert_same_content(master, slave, 180)


def test_a_slave_never_keeps_a_key_its_master_deleted_while_it_was_down(tmp_path, processes):
    master, slave = master_and_slave(processes, tmp_path, 300)
    slave.stop()
    with Client(master.endpoint, timeout=5, direct=False) as client:
        assert client.mdelete([b"key%06d" % i for i in range(300)]) == [True] * 300
    slave = start_slave(processes, tmp_path / "slave", master)
    wait_for(lambda: in_sync(master, slave), "the slave to catch up")
    with Client(slave.endpoint, timeout=5) as client:
        assert client.mget([b"key%06d" % i for i in range(300)]) == [None] * 300
    assert_same_content(master, slave, 0)


def _post_subscribe(router, doc: dict) -> tuple[int, str]:
    request = urllib.request.Request(router.url + "/subscribe", data=json.dumps(doc).encode(),
                                     method="POST", headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def test_subscribe_makes_a_waiting_node_a_slave_and_reads_survive_the_master(tmp_path, processes):
    master = start_master(processes, tmp_path / "master")
    write(master, 0, 1_000, delete_every=7)
    waiting = start_slave(processes, tmp_path / "slave", None)  # no master until /subscribe
    with Client(waiting.endpoint, timeout=5) as client:
        with pytest.raises(Unavailable, match="catching up"):
            client.get(b"key000001")
    router = processes.router(tmp_path / "unused", "--nodes", master.address,
                              "--read-preference", "master", "--node-timeout", "0.5").wait_ready()
    # The errors first: a named master that is none, the master itself, a node not there.
    assert _post_subscribe(router, {"ip": "127.0.0.1", "port": waiting.port,
                                    "master": f"127.0.0.1:{free_port()}"})[0] == 418
    status, body = _post_subscribe(router, {"ip": "127.0.0.1", "port": master.port})
    assert status == 400 and "master of partition 0" in body
    assert _post_subscribe(router, {"ip": "127.0.0.1", "port": free_port()})[0] == 503
    assert _post_subscribe(router, {"ip": "127.0.0.1", "port": waiting.port}) == (200, "Subscribed")
    wait_for(lambda: in_sync(master, waiting), "the subscribed node to catch up")

    def listed_ready():
        with Client(router.endpoint, timeout=5) as client:
            slaves = client.stats()["partitions"][0]["slaves"]
        return [(s["address"], s["ready"], s["lag"]) for s in slaves] == [(waiting.address, True, 0)]
    wait_for(listed_ready, "the router to list the new slave as ready")

    master.kill(signal.SIGKILL)
    keys = [b"key%06d" % i for i in range(1_000)]
    with Client(router.endpoint, timeout=5, direct=False) as client:
        def all_read():
            try:
                items = client.mget(keys)
            except YaddbError:
                return False
            return [i and i.value for i in items] == [None if n % 7 == 0 else b"value %d" % n
                                                       for n in range(1_000)]
        wait_for(all_read, "reads of the dead master's partition from its slave")
        with pytest.raises(Unavailable, match="master"):
            client.set(b"key000001", b"new")
    router.stop()
    on_slave, = contents(waiting)
    assert len(on_slave) == 1_000 - 143


def test_a_slave_refuses_to_be_wiped_by_a_master_that_lost_its_data(tmp_path, processes):
    master, slave = master_and_slave(processes, tmp_path, 500)
    master.stop()
    shutil.rmtree(tmp_path / "master")  # the master comes back empty, a new history
    master = start_master(processes, tmp_path / "master", port=master.port)
    wait_for(lambda: "REFUSING to replace" in slave.log(), "the slave to refuse loudly")
    assert replication(slave)["ready"] is False
    # An operator's explicit subscribe accepts the master's (empty) data.
    with Client(slave.endpoint, timeout=10) as client:
        assert client._conn.call("follow", [master.address]) == "Subscribed"
    wait_for(lambda: in_sync(master, slave), "the slave to take the master's data")
    assert_same_content(master, slave, 0)
