"""/stats and /metrics against a hand-written router status (conftest.Status); the same figures
from a real cluster are checked in test_edge_cluster.py."""
import re

from yaddb.http_edge.app import make_app
from tests.http_edge.conftest import MAX_VALUE, query


# --- /stats and /metrics -----------------------------------------------------------------------

def test_stats(edge, status):
    edge.call("GET", "/ping")
    edge.call("GET", "/nope")
    doc = edge.call("GET", "/stats").json()
    assert doc["partitions"] == status.doc["partitions"]
    requests = doc["http_edge"]["requests"]
    assert requests["GET /ping"]["200"] >= 1 and requests["GET other"]["404"] >= 1
    assert doc["http_edge"]["max_value_bytes"] == MAX_VALUE


def test_status_provider_failure_is_503_json(edge, status):
    status.fail = RuntimeError("router is starting")
    try:
        assert "router is starting" in edge.call("GET", "/stats").error(503)
        metrics = edge.call("GET", "/metrics")
        assert metrics.status == 200 and b"yaddb_router_status_ok 0" in metrics.body
    finally:
        status.fail = None


def test_metrics(edge, node):
    edge.call("GET", "/ping")
    query(edge, "ffff")  # a 404
    reply = edge.call("GET", "/metrics")
    assert reply.status == 200
    assert reply.content_type.startswith("text/plain; version=0.0.4")
    text = reply.body.decode()
    address = node.endpoint.split("://", 1)[1]
    assert re.search(r'^yaddb_http_requests_total\{endpoint="/ping",method="GET",status="200"\} [1-9]',
                     text, re.M)
    assert re.search(r'^yaddb_http_requests_total\{endpoint="/query",method="POST",status="404"\} [1-9]',
                     text, re.M)
    assert re.search(r'^yaddb_http_request_duration_seconds_bucket'
                     r'\{endpoint="/ping",status="200",le="\+Inf"\} [1-9]', text, re.M)
    assert re.search(r'^yaddb_http_request_duration_seconds_count\{endpoint="/ping",status="200"\} [1-9]',
                     text, re.M)
    assert f'yaddb_node_up{{partition="0",node="{address}",role="master"}} 1' in text
    assert 'yaddb_node_up{partition="0",node="127.0.0.1:1",role="slave"} 0' in text
    assert 'yaddb_node_up{partition="1",node="127.0.0.1:2",role="master"} 0' in text
    assert 'yaddb_replication_lag{partition="0",node="127.0.0.1:1",role="slave"} 7' in text
    assert 'yaddb_replication_lag{partition="1",node="127.0.0.1:3",role="slave"} 2' in text
    assert f'yaddb_node_keys{{partition="0",node="{address}",role="master"}} 3' in text
    # Every sample line is `name{labels} number` and every family has HELP and TYPE.
    families = set()
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            families.add(line.split()[2])
        elif not line.startswith("#"):
            assert re.fullmatch(r'[a-z_]+(\{[^}]*\})? (-?[0-9.e+-]+|NaN|[+-]Inf)', line), line
            name = line.split("{")[0].split(" ")[0]
            assert re.sub(r"_(bucket|sum|count)$", "", name) in families, line


def test_metric_labels_are_escaped(make_edge):
    status = lambda: {"partitions": [{"index": 0, "master": 'we"ird\\node\n', "alive": True}]}
    edge = make_edge(make_app(lambda: None, status))
    text = edge.call("GET", "/metrics").body.decode()
    assert 'yaddb_node_up{partition="0",node="we\\"ird\\\\node\\n",role="master"} 1' in text
