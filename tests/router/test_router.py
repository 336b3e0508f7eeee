"""The router loop in a thread in front of real node processes."""
import os
import signal
import threading
import time

import pytest
import zmq

from yaddb import Client
from yaddb.client import _reachable
from yaddb.errors import Unavailable, YaddbError
from yaddb.placement import partition_for
from yaddb.router.server import RouterServer
from tests.helpers import free_port, wait_for


@pytest.fixture
def cluster(tmp_path, processes):
    """Two node processes and a router thread; yields (router endpoint, nodes, router)."""
    nodes = [processes.node(tmp_path / f"node{i}") for i in range(2)]
    context = zmq.Context()
    router = None
    thread = None
    try:
        for node in nodes:
            node.wait_ready()
        endpoint = f"tcp://127.0.0.1:{free_port()}"
        router = RouterServer([f"127.0.0.1:{node.port}" for node in nodes], [endpoint], context,
                              node_timeout=0.5)
        thread = threading.Thread(target=router.serve, daemon=True)
        thread.start()
        assert router.ready.wait(30)
        yield endpoint, nodes, router
    finally:
        if router is not None:
            router.stop()
            thread.join(30)
        context.term()


def test_keys_land_on_their_partition_and_read_back_through_the_router(cluster):
    endpoint, nodes, _ = cluster
    keys = [b"key%d" % i for i in range(200)]
    with Client(endpoint, timeout=5) as client:
        for key in keys:
            client.set(key, key * 2)
        assert all(client.get(key).value == key * 2 for key in keys)
        assert client.mset([(b"m%d" % i, b"%d" % i) for i in range(50)]) == [b"m%d" % i for i in range(50)]
        assert [item.value for item in client.mget([b"m%d" % i for i in range(50)])] == \
            [b"%d" % i for i in range(50)]
        assert client.mdelete([b"m0", b"m1", b"nothing"]) == [True, True, False]
        assert client.delete(b"key0") is True and client.get(b"key0") is None
        assert client.mget([]) == [] and client.ping()
    for index, node in enumerate(nodes):  # each node holds exactly its partition's keys
        with Client(node.endpoint, timeout=5) as direct:
            for key in keys[1:]:
                item = direct.get(key)
                assert (item is not None) == (partition_for(key, 2) == index)


def test_a_dead_master_gives_unavailable_fast_and_the_other_partition_serves(cluster, processes):
    endpoint, nodes, router = cluster
    keys = {index: [k for k in (b"k%d" % i for i in range(100)) if partition_for(k, 2) == index]
            for index in (0, 1)}
    with Client(endpoint, timeout=5) as client:
        for key in keys[0] + keys[1]:
            client.set(key, b"v")
        nodes[1].kill()
        for key in keys[1][:5]:
            started = time.monotonic()
            with pytest.raises(Unavailable, match="partition 1"):
                client.set(key, b"w")
            assert time.monotonic() - started < 0.5 + 2.0  # the node timeout, plus slack
        with pytest.raises(Unavailable):
            client.mget(keys[0][:3] + keys[1][:3])  # one part missing: the whole call fails
        assert all(client.get(key).value == b"v" for key in keys[0])
        wait_for(lambda: not router.status()["partitions"][1]["alive"], "partition 1 to be seen down")
        # The node comes back on its port: the router uses it again without a restart.
        nodes[1] = processes.node(nodes[1].data_dir, port=nodes[1].port).wait_ready()

        def served() -> bool:
            try:
                return client.get(keys[1][0]).value == b"v"
            except YaddbError:
                return False
        wait_for(served, "the router to use the restarted node")
        wait_for(lambda: router.status()["partitions"][1]["alive"], "partition 1 to be seen up")


def test_a_hung_master_times_out_into_unavailable(cluster):
    endpoint, nodes, _ = cluster
    key = next(k for k in (b"h%d" % i for i in range(100)) if partition_for(k, 2) == 0)
    with Client(endpoint, timeout=5) as client:
        client.set(key, b"v")
        os.killpg(nodes[0].proc.pid, signal.SIGSTOP)  # alive, connected, silent
        try:
            started = time.monotonic()
            # "did not answer within 0.5 s", or "not reachable" once libzmq stops queueing to it
            with pytest.raises(Unavailable, match="partition 0 master"):
                client.get(key)
            assert 0.4 < time.monotonic() - started < 3.0
        finally:
            os.killpg(nodes[0].proc.pid, signal.SIGCONT)
        wait_for(lambda: _get_or_none(client, key) == b"v", "the node to answer again")


def _get_or_none(client, key):
    try:
        item = client.get(key)
        return item and item.value
    except YaddbError:
        return None


def test_a_direct_client_sends_one_key_calls_straight_to_the_masters(cluster, processes):
    endpoint, nodes, router = cluster
    with Client(endpoint, timeout=4, direct=True) as client:
        keys = [b"d%d" % i for i in range(60)]
        for key in keys:
            client.set(key, key)
        assert all(client.get(key).value == key for key in keys)
        assert client.delete(keys[0]) is True
        counts = router.status()["requests"]
        assert counts.get("set", 0) == 0 and counts.get("get", 0) == 0 and counts["map"] == 1
        assert [i and i.value for i in client.mget(keys[:3])] == [None, keys[1], keys[2]]  # batches: router
        # A master gone: the call falls back to the router, which says why, within the timeout.
        nodes[1].kill()
        victim = next(k for k in keys[1:] if partition_for(k, 2) == 1)
        survivor = next(k for k in keys[1:] if partition_for(k, 2) == 0)
        started = time.monotonic()
        with pytest.raises(Unavailable, match="partition 1"):
            client.get(victim)
        assert time.monotonic() - started < 4 + 1
        assert client.get(survivor).value == survivor
        nodes[1] = processes.node(nodes[1].data_dir, port=nodes[1].port).wait_ready()
        wait_for(lambda: _get_or_none(client, victim) == victim, "the restarted master to serve")


def test_a_direct_client_pointed_at_a_node_just_talks_to_it(tmp_path, processes):
    node = processes.node(tmp_path / "node").wait_ready()
    with Client(node.endpoint, timeout=4, direct=True) as client:
        with pytest.raises(YaddbError, match="ask a router"):
            client._conn.call("map", [])  # a node has no partition map to give
        client.set(b"k", b"v")           # so the client sends to the node itself
        assert client.get(b"k").value == b"v"
        assert client.direct is False    # and stops asking


def test_a_client_routes_by_itself_only_to_masters_it_can_reach():
    masters = ["127.0.0.1:7001", "127.0.0.1:7002"]
    assert _reachable("tcp://127.0.0.1:5555", masters)
    assert _reachable("tcp://localhost:5555", masters)
    assert _reachable("inproc://router", masters)
    assert not _reachable("tcp://10.1.2.3:5555", masters)        # another machine's loopback
    assert _reachable("tcp://10.1.2.3:5555", ["10.1.2.4:7001", "10.1.2.5:7002"])


def test_a_client_of_a_router_routes_by_itself_by_default(cluster):
    endpoint, _, router = cluster
    before = dict(router.status()["requests"])
    with Client(endpoint, timeout=4) as client:
        client.set(b"default", b"direct")
        assert client.get(b"default").value == b"direct"
    after = router.status()["requests"]
    assert [after.get(op, 0) - before.get(op, 0) for op in ("map", "set", "get")] == [1, 0, 0]
