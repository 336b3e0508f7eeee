"""CURVE through the router (CONTRACT.md section 8): the one-command cluster keeps its nodes to
itself yet serves keyless clients on loopback; a client with a key (given, or readable where
the router's map says) routes straight to the masters; a router's CURVE front turns keyless peers away; refusals reach /stats and /metrics."""
import json
import stat
import threading
import urllib.request

import pytest
import zmq
from prometheus_client.parser import text_string_to_metric_families

from yaddb import Client
from yaddb.router.server import RouterServer
from yaddb.supervisor import free_port
from yaddb.transport.curve import Security
from yaddb.transport.keys import load_keys, make_keys
from tests.helpers import wait_for
from tests.node.test_security import unanswered


def router_counts(router_endpoint):
    with Client(router_endpoint, timeout=10, direct=False) as client:
        return client.stats()["requests"]


def test_the_one_command_cluster_makes_keys_and_keeps_its_nodes_to_itself(tmp_path, processes):
    data = tmp_path / "data"
    router = processes.router(data).wait_ready()
    keys = data / "keys"
    assert stat.S_IMODE((keys / "member.key_secret").stat().st_mode) == 0o600
    assert stat.S_IMODE((keys / "client-1.key_secret").stat().st_mode) == 0o600

    with Client(router.endpoint, timeout=10, keys=str(keys)) as keyed:
        key = keyed.set(None, b"hello")
        masters = [p["master"] for p in keyed.stats()["partitions"]]
        before = router_counts(router.endpoint).get("get", 0)
        for _ in range(5):
            assert keyed.get(key).value == b"hello"  # straight to the key's master
        assert router_counts(router.endpoint).get("get", 0) == before
    for master in masters:  # a process without the cluster's keys gets nothing from a node
        assert unanswered(f"tcp://{master}", "del", [key])

    # A client given no keys, on this machine as the cluster's user: the map names the keys
    # folder, the client key there is readable, so one-key calls go straight to the masters.
    with Client(router.endpoint, timeout=10, local=False) as keyless:  # section 5's examples
        before = router_counts(router.endpoint).get("get", 0)
        for _ in range(5):
            assert keyless.get(key).value == b"hello"
        assert keyless.direct is True and router_counts(router.endpoint).get("get", 0) == before
    # With no client key it may read there, a client still reaches the masters over their
    # same-machine sockets, which take this user's processes (transport/local.py); over
    # ZeroMQ alone it stays with the router: no failed direct try per call.
    (keys / "client-1.key_secret").rename(tmp_path / "client-1.key_secret")
    with Client(router.endpoint, timeout=10) as keyless:
        before = router_counts(router.endpoint).get("get", 0)
        for _ in range(5):
            assert keyless.get(key).value == b"hello"
        assert router_counts(router.endpoint).get("get", 0) == before
        assert {type(node).__name__ for node in keyless._nodes} == {"LocalConnection"}
    with Client(router.endpoint, timeout=10, local=False) as keyless:
        assert keyless.get(key).value == b"hello"
        assert keyless.direct is False
        before = router_counts(router.endpoint).get("get", 0)
        for _ in range(5):
            assert keyless.get(key).value == b"hello"
        assert router_counts(router.endpoint).get("get", 0) - before == 5

    with urllib.request.urlopen(urllib.request.Request(
            f"{router.url}/query", data=key.hex().encode(), headers={"Content-Type": "text/plain"}),
            timeout=10) as answer:
        assert json.load(answer)[key.hex()]["value"] == "hello"

    def refusals_reported():
        with urllib.request.urlopen(f"{router.url}/stats", timeout=10) as answer:
            stats = json.load(answer)
        counted = sum(p.get("refused", {}).get("handshake", 0) for p in stats["partitions"])
        with urllib.request.urlopen(f"{router.url}/metrics", timeout=10) as answer:
            metrics = answer.read().decode()
        handshakes = [sample.value for family in text_string_to_metric_families(metrics)
                      for sample in family.samples if sample.name == "yaddb_refused_total"
                      and sample.labels["reason"] == "handshake"]
        return counted >= len(masters) and sum(handshakes) == counted
    wait_for(refusals_reported, "the nodes' refusals in /stats and /metrics, agreeing", 30)


@pytest.fixture
def curve_front(tmp_path, processes):
    """Two keyed masters behind an in-process router whose front takes CURVE clients only,
    as a router beyond loopback does (tests bind loopback alone)."""
    directory = tmp_path / "keys"
    make_keys(str(directory))
    nodes = [processes.node(tmp_path / f"node{i}", "--keys-dir", str(directory)) for i in range(2)]
    for node in nodes:
        node.wait_ready()
    context = zmq.Context()
    security = Security(context, load_keys(str(directory)), "router")
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    router = RouterServer([node.address for node in nodes], [endpoint], context, node_timeout=2.0,
                          security=security, curve_front=True)
    thread = threading.Thread(target=router.serve, daemon=True)
    thread.start()
    try:
        assert router.ready.wait(30) and router.start_error is None
        yield endpoint, str(directory), router
    finally:
        router.stop()
        thread.join(30)
        security.close()
        context.term()


def test_a_curve_front_serves_client_keys_and_turns_keyless_peers_away(curve_front):
    endpoint, keys, router = curve_front
    with Client(endpoint, timeout=10, keys=keys) as client:
        written = client.mset({b"k%d" % i: b"v%d" % i for i in range(50)})
        assert [item.value for item in client.mget(written)] == [b"v%d" % i for i in range(50)]
        assert client.get(b"k7").value == b"v7"
    assert unanswered(endpoint, "del", [b"k7"])
    assert unanswered(endpoint, "stats", [])
    with Client(endpoint, timeout=10, keys=keys) as client:
        assert client.get(b"k7").value == b"v7"
    wait_for(lambda: router.status().get("refused", {}).get("handshake", 0) >= 2,
             "the router to count the keyless peers", 30)
