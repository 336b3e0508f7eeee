"""`run_router.py` as a user runs it: the one-command cluster, started and stopped by the test."""
import json
import os
import signal
import time
import urllib.error
import urllib.request

from yaddb import Client, key_for
from yaddb.errors import YaddbError
from yaddb.placement import partition_for
from tests import proc_table
from tests.helpers import wait_for


def test_the_one_command_cluster_starts_serves_stops_and_keeps_its_data(tmp_path, processes):
    data = tmp_path / "data"
    router = processes.router(data)
    router.wait_ready()
    nodes = [p for p in map(proc_table.proc, router.node_pids()) if p is not None]
    assert len(nodes) == 4  # a master and a slave per partition
    with Client(router.endpoint, timeout=5) as client:
        keys = client.mset([(b"k%d" % i, b"v%d" % i) for i in range(100)])
        stats = client.stats()
        assert [p["alive"] for p in stats["partitions"]] == [True, True]
        wait_for(lambda: _slaves_in_sync(client), "each master's slave to be listed and in sync")
    assert "native clients: " in router.log()
    assert router.stop() == 0
    wait_for(lambda: not any(map(proc_table.alive, nodes)), "the nodes to exit with the router")
    router = processes.router(data)  # new ports, same data
    router.wait_ready()
    with Client(router.endpoint, timeout=5) as client:
        assert [item.value for item in client.mget(keys)] == [b"v%d" % i for i in range(100)]
        wait_for(lambda: _slaves_in_sync(client), "the slaves to resume on the new ports")


def _slaves_in_sync(client):
    partitions = client.stats()["partitions"]
    return all(len(p["slaves"]) == 1 and p["slaves"][0]["ready"] and p["slaves"][0]["lag"] == 0
               and p["slaves"][0]["applied"] == p["sequence"] for p in partitions)


def test_two_routers_on_one_data_dir_get_a_clear_error(tmp_path, processes):
    data = tmp_path / "data"
    first = processes.router(data)
    first.wait_ready()
    second = processes.router(data)
    assert second.proc.wait(timeout=60) == 1
    assert f"{data} is in use by another" in second.log()  # names the directory
    with Client(first.endpoint, timeout=5) as client:
        assert client.ping()


def test_a_node_that_dies_is_reported_and_restarted(tmp_path, processes):
    router = processes.router(tmp_path / "data")
    router.wait_ready()
    with Client(router.endpoint, timeout=5) as client:
        client.mset([(b"k%d" % i, b"v") for i in range(20)])
        victim = router.node_pids()[0]
        os.killpg(victim, signal.SIGKILL)
        wait_for(lambda: "restarting it" in router.log(), "the router to report the dead node")
        wait_for(lambda: len(router.node_pids()) == 4 and victim not in router.node_pids(),
                 "the node to be restarted")

        def all_served():
            try:
                return all(item and item.value == b"v" for item in client.mget([b"k%d" % i for i in range(20)]))
            except YaddbError:
                return False
        wait_for(all_served, "every key to be served again", timeout=60)


def http(router, method, path, body=b"", content_type=None):
    """(status, parsed JSON or text) of one HTTP request to the router's edge."""
    request = urllib.request.Request(router.url + path, data=body or None, method=method)
    if content_type:
        request.add_header("Content-Type", content_type)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            status, raw, kind = response.status, response.read(), response.headers.get_content_type()
    except urllib.error.HTTPError as error:
        status, raw, kind = error.code, error.read(), error.headers.get_content_type()
    return status, (json.loads(raw) if kind == "application/json" else raw.decode())


def test_http_and_native_clients_see_the_same_data_and_a_dead_node_gives_503(tmp_path, processes):
    router = processes.router(tmp_path / "data")
    router.wait_ready()
    assert http(router, "GET", "/ping") == (200, "PONG")
    body = json.dumps({"content_type": "text/plain", "encoding": "utf-8", "value": "hello"}).encode()
    status, stored = http(router, "PUT", "/set", body, "application/json")
    (hex_key,) = stored
    assert status == 200 and stored[hex_key]["value"] == "hello"
    with Client(router.endpoint, timeout=5) as client:
        assert client.get(bytes.fromhex(hex_key)).value == b"hello"  # HTTP -> native
        keys = [client.set(b"native%d" % i, "value %d" % i) for i in range(10)]
    for i, key in enumerate(keys):  # native -> HTTP, raw key and hex key
        assert http(router, "POST", "/query", key.hex().encode(), "text/plain") == \
            (200, {key.hex(): {"content_type": "text/plain", "encoding": "utf-8", "value": "value %d" % i}})
        assert http(router, "POST", "/query", key, "application/octet-stream")[0] == 200
    assert http(router, "DELETE", "/delete", keys[0].hex().encode(), "text/plain") == (200, {"deleted": keys[0].hex()})
    assert http(router, "POST", "/query", keys[0].hex().encode(), "text/plain")[0] == 404
    status, stats = http(router, "GET", "/stats")
    assert status == 200 and len(stats["partitions"]) == 2
    assert "yaddb_node_up" in http(router, "GET", "/metrics")[1]
    # Partition 0's master hung: its reads go on from its slave (at most one 503 while the
    # router finds out), its writes get 503 within the timeout; partition 1 serves everything.
    wait_for(lambda: all(p["slaves"] and p["slaves"][0]["ready"] for p in http(router, "GET", "/stats")[1]["partitions"]),
             "the slaves to be ready")
    victim = router.master_pid(0)
    os.killpg(victim, signal.SIGSTOP)  # hung, so the supervisor does not restart it meanwhile
    try:
        statuses = []
        for key in keys[1:]:
            started = time.monotonic()
            status, reply = http(router, "POST", "/query", key.hex().encode(), "text/plain")
            assert time.monotonic() - started < 5.0
            statuses.append(status)
            if status == 503:
                assert "partition 0" in reply["error"]
        assert statuses.count(200) >= len(keys[1:]) - 1
        for i in range(10):
            value = json.dumps({"content_type": "text/plain", "encoding": "utf-8", "value": f"w{i}"}).encode()
            started = time.monotonic()
            status, reply = http(router, "PUT", "/set", value, "application/json")
            assert time.monotonic() - started < 5.0
            key = key_for(f"w{i}".encode())
            assert status == (503 if partition_for(key, 2) == 0 else 200), reply
    finally:
        os.killpg(victim, signal.SIGCONT)
