"""The HTTP edge end to end, as real processes: two masters and a slave (run_node.py) behind
`run_router.py --nodes A B`. What the test writes and asks over HTTP must come back, exactly,
in /stats and /metrics: keys per partition (placed by partition_for), roles, liveness, the
slave's lag, and the request counters by endpoint, method and status.

Every process is registered with the `processes` fixture as it starts, so teardown stops it
even when the test fails before it answered.
"""
from collections import Counter
from typing import NamedTuple

import pytest
from prometheus_client.parser import text_string_to_metric_families

from yaddb.placement import partition_for
from tests.helpers import NodeProcess, RouterProcess, wait_for
from tests.http_edge.conftest import ITEM, HttpCaller, put, query

PARTITIONS = 2
KEYS = [b"edge-cluster-%02d" % i for i in range(16)]
SETTLE_S = 90.0  # generous: the machine is shared, and the router polls each node once a second


class CountingCaller(HttpCaller):
    """HttpCaller that counts every reply it gets by (endpoint, method, status), as the edge
    counts requests; only the edge's own paths are called, so no path is "other"."""

    def __init__(self, port):
        super().__init__(port)
        self.counts = Counter()

    def call(self, method, path, *args, **kwargs):
        reply = super().call(method, path, *args, **kwargs)
        self.counts[(path, method, reply.status)] += 1
        return reply


class Cluster(NamedTuple):
    masters: list
    slave: NodeProcess
    router: RouterProcess
    http: CountingCaller

    def stats(self) -> dict:
        return self.http.call("GET", "/stats").json()

    def metrics(self) -> dict:
        """/metrics, parsed by prometheus_client, as {(name, frozenset of (label, value)): value}."""
        reply = self.http.call("GET", "/metrics")
        assert reply.status == 200, reply.body[:300]
        samples = {}
        for family in text_string_to_metric_families(reply.body.decode()):
            for sample in family.samples:
                key = (sample.name, frozenset(sample.labels.items()))
                assert key not in samples, f"{key} twice"
                samples[key] = sample.value
        return samples


def series(samples: dict, name: str) -> dict:
    """The samples of one metric, keyed by their labels as a dict's items."""
    return {labels: value for (metric, labels), value in samples.items() if metric == name}


def labels(**values) -> frozenset:
    return frozenset((name, str(value)) for name, value in values.items())


def node_gauges(stats: dict) -> dict:
    """/stats' partitions as the node gauges /metrics should show: {(name, labels): value}."""
    gauges = {}
    for part in stats["partitions"]:
        nodes = [(part["master"], "master", part)]
        nodes += [(copy["address"], "slave", copy) for copy in part["slaves"]]
        for address, role, fields in nodes:
            at = labels(partition=part["index"], node=address, role=role)
            gauges[("yaddb_node_up", at)] = float(fields["alive"])
            if fields.get("keys") is not None:
                gauges[("yaddb_node_keys", at)] = fields["keys"]
            if role == "slave" and fields.get("lag") is not None:
                gauges[("yaddb_replication_lag", at)] = fields["lag"]
    return gauges


@pytest.fixture
def cluster(tmp_path, processes) -> Cluster:
    masters = [processes.node(tmp_path / f"master-{i}") for i in range(PARTITIONS)]
    slave = processes.node(tmp_path / "slave", role=(
        "slave", "--master-host", "127.0.0.1", "--master-port", str(masters[0].port)))
    router = processes.router(tmp_path / "router", "--nodes", *(m.address for m in masters))
    for process in (*masters, slave, router):
        process.wait_ready()
    cluster = Cluster(masters, slave, router, CountingCaller(router.http_port))

    def settled() -> bool:
        parts = cluster.stats()["partitions"]
        return (all(p["alive"] for p in parts) and len(parts[0]["slaves"]) == 1
                and parts[0]["slaves"][0]["alive"] and parts[0]["slaves"][0]["ready"])
    wait_for(settled, "the router to see both masters and the ready slave", SETTLE_S)
    return cluster


def test_stats_and_metrics_report_what_was_written_and_asked(cluster):
    masters, slave, http = cluster.masters, cluster.slave, cluster.http
    per_partition = Counter(partition_for(key, PARTITIONS) for key in KEYS)
    assert sorted(per_partition) == [0, 1], "the keys must land on both partitions"
    expected = [per_partition[0], per_partition[1]]
    for i, key in enumerate(KEYS):
        assert put(http, {"key": key.hex(), **ITEM, "value": f"value {i}"}).status == 200
    for i, key in enumerate(KEYS):
        assert query(http, key.hex()).json() == {key.hex(): {**ITEM, "value": f"value {i}"}}
    assert "no such key" in query(http, "00ff00ff").error(404)
    assert "not valid JSON" in put(http, '{"value": ').error(400)

    def caught_up() -> bool:  # the router asks each node for its figures once a second
        parts = cluster.stats()["partitions"]
        copy = parts[0]["slaves"][0] if parts[0]["slaves"] else {}
        return ([p["keys"] for p in parts] == expected and copy.get("keys") == expected[0]
                and copy.get("lag") == 0 and copy.get("applied") == expected[0])
    wait_for(caught_up, "the router to report every write, and the slave to catch up", SETTLE_S)

    # /stats: the real figures, and the edge's counts of the requests made so far.
    asked = Counter(http.counts)
    doc = cluster.stats()
    parts = doc["partitions"]
    assert [p["index"] for p in parts] == [0, 1]
    for index, part in enumerate(parts):
        assert part["master"] == masters[index].address
        assert (part["alive"], part["role"], part["epoch"]) == (True, "master", 0), part
        assert (part["keys"], part["sequence"]) == (expected[index], expected[index]), part
    assert parts[1]["slaves"] == []
    [copy] = parts[0]["slaves"]
    assert copy["address"] == slave.address and copy["master"] == masters[0].address
    assert (copy["role"], copy["alive"], copy["ready"]) == ("slave", True, True), copy
    assert (copy["keys"], copy["applied"], copy["lag"]) == (expected[0], expected[0], 0), copy
    edge = doc["http_edge"]
    by_call = {}
    for (path, method, status), n in asked.items():
        by_call.setdefault(f"{method} {path}", {})[str(status)] = n
    assert edge["requests"] == by_call
    assert edge["requests_total"] == sum(asked.values())
    assert asked[("/set", "PUT", 200)] == len(KEYS) and asked[("/query", "POST", 200)] == len(KEYS)

    # /metrics: the same figures, and the counters of every request before this one.
    asked = Counter(http.counts)
    samples = cluster.metrics()
    gauges = {key: value for key, value in samples.items()
              if key[0] in ("yaddb_node_up", "yaddb_node_keys", "yaddb_replication_lag")}
    assert gauges == node_gauges(doc), "every node's up, keys and lag as /stats has them"
    assert len(gauges) == 3 + 3 + 1
    nodes = [(0, masters[0].address, "master"), (0, slave.address, "slave"),
             (1, masters[1].address, "master")]
    node_keys = [expected[0], expected[0], expected[1]]
    assert series(samples, "yaddb_node_up") == {
        labels(partition=p, node=n, role=r): 1 for p, n, r in nodes}
    assert series(samples, "yaddb_node_keys") == {
        labels(partition=p, node=n, role=r): keys for (p, n, r), keys in zip(nodes, node_keys)}
    assert series(samples, "yaddb_replication_lag") == {
        labels(partition=0, node=slave.address, role="slave"): 0}
    assert series(samples, "yaddb_router_status_ok") == {frozenset(): 1}
    assert series(samples, "yaddb_http_requests_total") == {
        labels(endpoint=path, method=method, status=status): n
        for (path, method, status), n in asked.items()}
    assert samples[("yaddb_http_requests_total",
                    labels(endpoint="/set", method="PUT", status=200))] == len(KEYS)
    by_status = Counter()
    for (path, _method, status), n in asked.items():
        by_status[(path, status)] += n
    assert series(samples, "yaddb_http_request_duration_seconds_count") == {
        labels(endpoint=path, status=status): n for (path, status), n in by_status.items()}
    for (path, status), n in by_status.items():
        inf = labels(endpoint=path, status=status, le="+Inf")
        assert samples[("yaddb_http_request_duration_seconds_bucket", inf)] == n


def test_a_dead_master_shows_in_stats_and_metrics_and_gives_503(cluster):
    masters, http = cluster.masters, cluster.http
    key_of = {partition_for(key, PARTITIONS): key for key in KEYS}
    for key in key_of.values():
        assert put(http, {"key": key.hex(), **ITEM, "value": "v"}).status == 200
    masters[1].kill()
    wait_for(lambda: cluster.stats()["partitions"][1]["alive"] is False,
             "the router to see partition 1's master gone", SETTLE_S)
    up = series(cluster.metrics(), "yaddb_node_up")
    assert up[labels(partition=1, node=masters[1].address, role="master")] == 0
    assert up[labels(partition=0, node=masters[0].address, role="master")] == 1
    assert "did not answer" in query(http, key_of[1].hex()).error(503)
    put(http, {"key": key_of[1].hex(), **ITEM, "value": "w"}).error(503)
    # The other partition serves on, and the router stops cleanly on SIGTERM.
    assert query(http, key_of[0].hex()).json() == {key_of[0].hex(): {**ITEM, "value": "v"}}
    assert cluster.router.stop() == 0, cluster.router.log()[-4000:]
