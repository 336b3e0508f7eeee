"""/stats and /metrics against a hand-written router status (conftest.Status), /metrics read back
through prometheus_client's own parsers; the same figures from a real cluster are checked in
test_edge_cluster.py."""
from collections import Counter

import prometheus_client
from prometheus_client.openmetrics.parser import \
    text_string_to_metric_families as openmetrics_families
from prometheus_client.parser import text_string_to_metric_families

from yaddb.http_edge.app import make_app
from yaddb.http_edge.metrics import LATENCY_BUCKETS
from tests.http_edge.conftest import MAX_VALUE, Status, query

# Every family /metrics has, by the name prometheus_client's parser gives it (a counter's
# without "_total"), with its type.
FAMILIES = {
    "yaddb_http_requests": "counter",
    "yaddb_http_request_duration_seconds": "histogram",
    "yaddb_router_status_ok": "gauge",
    "yaddb_node_up": "gauge",
    "yaddb_replication_lag": "gauge",
    "yaddb_node_keys": "gauge",
    "yaddb_refused": "counter",
    "process_cpu_seconds": "counter",
    "process_resident_memory_bytes": "gauge",
    "process_virtual_memory_bytes": "gauge",
    "process_start_time_seconds": "gauge",
    "process_open_fds": "gauge",
    "process_max_fds": "gauge",
}
OPENMETRICS = ("application/openmetrics-text;version=1.0.0;escaping=allow-utf-8;q=0.6,"
               "text/plain;version=0.0.4;q=0.3,*/*;q=0.2")  # what Prometheus 3 sends


def scrape(edge, accept=None):
    """GET /metrics parsed by prometheus_client: {family name: Metric}."""
    reply = edge.call("GET", "/metrics", headers={"Accept": accept} if accept else None)
    assert reply.status == 200, reply.body[:300]
    parse = openmetrics_families if accept else text_string_to_metric_families
    families = {}
    for family in parse(reply.body.decode()):
        assert family.name not in families, f"{family.name} twice"
        families[family.name] = family
    return families, reply


def samples(families, name, sample_name=None):
    """The samples of one family named `sample_name` (default: the family's name), as
    {frozenset of label items: value}; a label set seen twice fails."""
    found = {}
    for sample in families[name].samples:
        if sample.name == (sample_name or name):
            labels = frozenset(sample.labels.items())
            assert labels not in found, f"{sample.name}{sample.labels} twice"
            found[labels] = sample.value
    return found


def labels(**values):
    return frozenset((name, str(value)) for name, value in values.items())


def edge_requests(stats):
    """/stats' http_edge requests as {(endpoint, method, status): count}."""
    counts = {}
    for call, by_status in stats["http_edge"]["requests"].items():
        method, endpoint = call.split(" ", 1)
        for status, n in by_status.items():
            counts[(endpoint, method, status)] = n
    return counts


def metric_requests(families):
    return {(dict(k)["endpoint"], dict(k)["method"], dict(k)["status"]): v
            for k, v in samples(families, "yaddb_http_requests", "yaddb_http_requests_total").items()}


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
        families, _ = scrape(edge)
    finally:
        status.fail = None
    assert samples(families, "yaddb_router_status_ok") == {frozenset(): 0}
    for name in ("yaddb_node_up", "yaddb_replication_lag", "yaddb_node_keys", "yaddb_refused"):
        assert families[name].samples == [], name  # the family is there, with nothing known
    assert samples(scrape(edge)[0], "yaddb_router_status_ok") == {frozenset(): 1}


def test_every_family_is_there_with_its_type(edge):
    edge.call("GET", "/ping")
    families, reply = scrape(edge)
    assert reply.content_type == "text/plain; version=0.0.4; charset=utf-8"
    assert {name: family.type for name, family in families.items()} == FAMILIES
    assert reply.body.decode().count("# HELP ") == len(FAMILIES)
    assert samples(families, "yaddb_router_status_ok") == {frozenset(): 1}
    assert samples(families, "process_cpu_seconds", "process_cpu_seconds_total")[frozenset()] > 0
    assert samples(families, "process_resident_memory_bytes")[frozenset()] > 1 << 20


def test_node_gauges_are_the_status_figures(edge, node, status):
    families, _ = scrape(edge)
    address = node.endpoint.split("://", 1)[1]
    assert samples(families, "yaddb_node_up") == {
        labels(partition=0, node=address, role="master"): 1,
        labels(partition=0, node="127.0.0.1:1", role="slave"): 0,
        labels(partition=1, node="127.0.0.1:2", role="master"): 0}  # 127.0.0.1:3: nothing known
    assert samples(families, "yaddb_replication_lag") == {
        labels(partition=0, node="127.0.0.1:1", role="slave"): 7,
        labels(partition=1, node="127.0.0.1:3", role="slave"): 2}
    assert samples(families, "yaddb_node_keys") == {
        labels(partition=0, node=address, role="master"): 3}
    assert samples(families, "yaddb_refused", "yaddb_refused_total") == {}


def test_requests_agree_between_stats_and_metrics(edge):
    edge.call("GET", "/ping")
    edge.call("GET", "/ping")
    query(edge, "ffff")  # a 404
    edge.call("PATCH", "/elsewhere")
    stats = edge_requests(edge.call("GET", "/stats").json())
    families, _ = scrape(edge)
    # /metrics counts every request before it: those /stats counted, and that /stats.
    expected = Counter(stats)
    expected[("/stats", "GET", "200")] += 1
    assert metric_requests(families) == dict(expected)
    assert expected[("/query", "POST", "404")] >= 1 and expected[("other", "PATCH", "404")] >= 1

    # The histogram: per endpoint and status, the requests of every method, in rising buckets.
    by_status = Counter()
    for (endpoint, _method, code), n in expected.items():
        by_status[(endpoint, code)] += n
    duration = "yaddb_http_request_duration_seconds"
    assert samples(families, duration, duration + "_count") == {
        labels(endpoint=endpoint, status=code): n for (endpoint, code), n in by_status.items()}
    buckets = samples(families, duration, duration + "_bucket")
    sums = samples(families, duration, duration + "_sum")
    bounds = [repr(bound) for bound in LATENCY_BUCKETS] + ["+Inf"]
    for (endpoint, code), n in by_status.items():
        counts = [buckets[labels(endpoint=endpoint, status=code, le=le)] for le in bounds]
        assert counts == sorted(counts) and counts[-1] == n, (endpoint, code, counts)
        assert 0 < sums[labels(endpoint=endpoint, status=code)] < n * 10.0
    assert len(buckets) == len(bounds) * len(by_status)


def test_refusals_are_the_status_figures(make_edge):
    status = Status({"refused": {"handshake": 4, "not_permitted": 1}, "partitions": [
        {"index": 0, "master": {"address": "10.0.0.1:7000", "lag": 3}, "alive": True, "keys": 5,
         "refused": {"handshake": 2, "unknown_key": 3},
         "slaves": [{"address": "10.0.0.2:7000", "alive": True, "lag": 0, "keys": 5,
                     "refused": {"handshake": 6}}]}]})
    edge = make_edge(make_app(lambda: None, status))
    families, _ = scrape(edge)
    assert samples(families, "yaddb_refused", "yaddb_refused_total") == {
        labels(node="router", reason="handshake"): 4,
        labels(node="router", reason="not_permitted"): 1,
        labels(node="10.0.0.1:7000", reason="handshake"): 2,
        labels(node="10.0.0.1:7000", reason="unknown_key"): 3,
        labels(node="10.0.0.2:7000", reason="handshake"): 6}
    assert samples(families, "yaddb_replication_lag") == {  # a slave's alone
        labels(partition=0, node="10.0.0.2:7000", role="slave"): 0}
    assert samples(families, "yaddb_node_keys") == {
        labels(partition=0, node="10.0.0.1:7000", role="master"): 5,
        labels(partition=0, node="10.0.0.2:7000", role="slave"): 5}
    status.doc["partitions"][0]["refused"]["unknown_key"] = 9  # read again at each scrape
    refused = samples(scrape(edge)[0], "yaddb_refused", "yaddb_refused_total")
    assert refused[labels(node="10.0.0.1:7000", reason="unknown_key")] == 9


def test_openmetrics_when_the_scraper_asks_for_it(edge):
    edge.call("GET", "/ping")
    text_families, _ = scrape(edge)
    families, reply = scrape(edge, OPENMETRICS)
    assert reply.content_type.startswith("application/openmetrics-text; version=1.0.0")
    assert reply.body.endswith(b"# EOF\n")
    assert {name: family.type for name, family in families.items()} == FAMILIES
    for name in ("yaddb_node_up", "yaddb_replication_lag", "yaddb_node_keys"):
        assert samples(families, name) == samples(text_families, name)
    # The text scrape in between is the one request more.
    text_requests = Counter(metric_requests(text_families))
    text_requests[("/metrics", "GET", "200")] += 1
    assert metric_requests(families) == dict(text_requests)


def test_each_app_has_its_own_registry(make_edge, status):
    first = make_edge(make_app(lambda: None, status))
    second = make_edge(make_app(lambda: None, status))
    for _ in range(3):
        first.call("GET", "/ping")
    assert metric_requests(scrape(first)[0]) == {("/ping", "GET", "200"): 3}
    assert metric_requests(scrape(second)[0]) == {}
    assert metric_requests(scrape(second)[0]) == {("/metrics", "GET", "200"): 1}
    # Nothing of ours in the library's global registry.
    global_names = {family.name for family in prometheus_client.REGISTRY.collect()}
    assert not {name for name in global_names if name.startswith("yaddb_")}


def test_metric_labels_are_escaped(make_edge):
    status = lambda: {"partitions": [{"index": 0, "master": 'we"ird\\node\n', "alive": True}]}
    edge = make_edge(make_app(lambda: None, status))
    reply = edge.call("GET", "/metrics")
    assert 'node="we\\"ird\\\\node\\n"' in reply.body.decode()
    families, _ = scrape(edge)
    assert samples(families, "yaddb_node_up") == {
        labels(partition=0, node='we"ird\\node\n', role="master"): 1}
