"""Request accounting of the HTTP edge, and /metrics through prometheus_client.

Each app has a registry of its own (`edge_registry`; never the library's global one, so several
apps in one process do not mix), read at scrape time by one custom collector (`EdgeCollector`)
and the library's ProcessCollector; the text is the library's (`exposition`: the 0.0.4 text
format, or what the scraper's Accept header asks for, OpenMetrics included).

    yaddb_http_requests_total{endpoint, method, status}              counter
    yaddb_http_request_duration_seconds{endpoint, status}            histogram
    yaddb_router_status_ok                                           gauge, 1 if the router's
                                                                     status could be read
    yaddb_node_up{partition, node, role}                             gauge, 1 or 0
    yaddb_replication_lag{partition, node, role="slave"}             gauge, in writes
    yaddb_node_keys{partition, node, role}                           gauge
    yaddb_refused_total{node, reason}                                counter (with CURVE):
        peers and requests a node (or node="router", the router's front) refused, by reason:
        handshake (no key, not ZeroMQ), unknown_key, not_permitted (a client key asking
        for a member's operation)
    process_*                                                        the edge's process (the
        router's): CPU seconds, resident and virtual memory, open and max fds, start time

The request figures are our own `Counts` (one lock, a few list additions per request: about a
fifth of the library's Counter + Histogram, and /stats reads the same snapshot); the collector
turns a snapshot into families at scrape time. The cluster's figures come from the router's
status, read once per scrape, as /stats shows it: the two endpoints read the same numbers.

`endpoint` is one of the edge's paths or "other" and `method` one of the usual methods or
"OTHER", so what a client sends cannot grow the number of series.
"""
from __future__ import annotations

import math
import threading
import time
from bisect import bisect_left
from typing import Any, Callable, Iterable, Iterator, Optional

from prometheus_client import CollectorRegistry, ProcessCollector
from prometheus_client.core import (CounterMetricFamily, GaugeMetricFamily,
                                    HistogramMetricFamily, Metric)
from prometheus_client.exposition import choose_encoder
from prometheus_client.utils import floatToGoString

__all__ = ["Counts", "EdgeCollector", "edge_registry", "exposition", "http_families",
           "cluster_families", "node_name", "endpoint_label", "method_label", "LATENCY_BUCKETS"]

KNOWN_PATHS = frozenset({"/ping", "/set", "/query", "/delete", "/subscribe", "/stats", "/metrics",
                         "/", "/openapi.json"})
KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"})
# Upper bounds (seconds) of the latency histogram's buckets.
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
                   2.5, 5.0, 10.0)


class Counts:
    """Requests by (endpoint, method, status) and latency by (endpoint, status); thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.started = time.time()
        # (endpoint, method, status) -> [count, sum of seconds, per-bucket counts...]
        self._series: dict[tuple[str, str, int], list] = {}

    def record(self, endpoint: str, method: str, status: int, seconds: float) -> None:
        index = bisect_left(LATENCY_BUCKETS, seconds)  # the first bucket with seconds <= bound
        key = (endpoint, method, status)
        with self._lock:
            series = self._series.get(key)
            if series is None:
                series = self._series[key] = [0, 0.0] + [0] * (len(LATENCY_BUCKETS) + 1)
            series[0] += 1
            series[1] += seconds
            series[2 + index] += 1

    def snapshot(self) -> dict[tuple[str, str, int], list]:
        with self._lock:
            return {key: list(series) for key, series in self._series.items()}


def endpoint_label(path: str) -> str:
    return path if path in KNOWN_PATHS else "other"


def method_label(method: str) -> str:
    return method if method in KNOWN_METHODS else "OTHER"


# ---------------------------------------------------------------------------------------------
# The figures as Prometheus metric families, made at scrape time
# ---------------------------------------------------------------------------------------------

def _value(value: Any) -> Optional[float]:
    """A sample value, or None for something that is not a number (a None the router has not
    heard yet, a string)."""
    if isinstance(value, bool):
        return 1.0 if value else 0.0
    if isinstance(value, (int, float)):
        return float(value)
    return None


def node_name(node: Any) -> Optional[str]:
    if isinstance(node, str):
        return node
    if isinstance(node, dict):
        for field in ("node", "address", "addr", "endpoint", "name"):
            if isinstance(node.get(field), str):
                return node[field]
        if node.get("host") is not None and node.get("port") is not None:
            return f"{node['host']}:{node['port']}"
    return None


def partition_nodes(partition: dict) -> Iterable[tuple[str, str, dict]]:
    """(node name, role, its fields) for the master and each slave of one partition entry.

    The master's fields are the partition's own ("alive", "keys", "lag" as a number). A slave
    may be a "host:port" string (nothing known about it) or a dict with "node" (or "address",
    or "host" and "port") and any of "alive", "keys", "lag". A partition-level "lag" that is a
    dict maps slave name -> lag."""
    master = partition.get("master")
    name = node_name(master)
    if name is not None:
        fields = dict(master) if isinstance(master, dict) else {}
        for field in ("alive", "keys", "refused"):
            if field in partition and field not in fields:
                fields[field] = partition[field]
        yield name, "master", fields
    lags = partition.get("lag") if isinstance(partition.get("lag"), dict) else {}
    slaves = partition.get("slaves") or []
    if isinstance(slaves, dict):  # {"host:port": {...}}
        slaves = [dict(info, node=node) if isinstance(info, dict) else node
                  for node, info in slaves.items()]
    for slave in slaves if isinstance(slaves, list) else []:
        name = node_name(slave)
        if name is None:
            continue
        fields = dict(slave) if isinstance(slave, dict) else {}
        if "lag" not in fields and name in lags:
            fields["lag"] = lags[name]
        yield name, "slave", fields


def _add_refused(family: CounterMetricFamily, node: str, counts: Any) -> None:
    if isinstance(counts, dict):
        for reason, count in sorted(counts.items()):
            if _value(count) is not None:
                family.add_metric([node, str(reason)], _value(count))


def cluster_families(status: Any) -> list[Metric]:
    """yaddb_node_up, yaddb_replication_lag, yaddb_node_keys and yaddb_refused_total from the
    router's status (anything not a status dict gives the families with no samples)."""
    roles = ["partition", "node", "role"]
    up = GaugeMetricFamily("yaddb_node_up", "1 if the router reaches the node, 0 if not.",
                           labels=roles)
    lag = GaugeMetricFamily("yaddb_replication_lag", "How far a slave is behind its master, in "
                            "writes (write-log sequence numbers).", labels=roles)
    keys = GaugeMetricFamily("yaddb_node_keys", "Keys a node holds, as the node last reported.",
                             labels=roles)
    refused = CounterMetricFamily("yaddb_refused_total", "Peers and requests refused for want of "
                                  "the right CURVE key, by node (or the router) and reason.",
                                  labels=["node", "reason"])
    status = status if isinstance(status, dict) else {}
    _add_refused(refused, "router", status.get("refused"))
    partitions = status.get("partitions")
    for position, partition in enumerate(partitions if isinstance(partitions, list) else []):
        if not isinstance(partition, dict):
            continue
        index = str(partition.get("index", position))
        for name, role, fields in partition_nodes(partition):
            labels = [index, name, role]
            if _value(fields.get("alive")) is not None:
                up.add_metric(labels, _value(fields["alive"]))
            if role == "slave" and _value(fields.get("lag")) is not None:
                lag.add_metric(labels, _value(fields["lag"]))
            if _value(fields.get("keys")) is not None:
                keys.add_metric(labels, _value(fields["keys"]))
            _add_refused(refused, name, fields.get("refused"))
    return [up, lag, keys, refused]


_BUCKET_NAMES = [floatToGoString(bound) for bound in LATENCY_BUCKETS + (math.inf,)]


def http_families(series: dict[tuple[str, str, int], list]) -> list[Metric]:
    """yaddb_http_requests_total and yaddb_http_request_duration_seconds from a snapshot of
    `Counts` (the histogram merges the methods of an endpoint and status)."""
    requests = CounterMetricFamily("yaddb_http_requests_total", "HTTP requests answered by the "
                                   "edge, by endpoint, method and status.",
                                   labels=["endpoint", "method", "status"])
    latency: dict[tuple[str, int], list] = {}
    for (endpoint, method, status), data in sorted(series.items()):
        requests.add_metric([endpoint, method, str(status)], data[0])
        merged = latency.setdefault((endpoint, status), [0] * len(data))
        for i, value in enumerate(data):
            merged[i] += value
    duration = HistogramMetricFamily("yaddb_http_request_duration_seconds", "Time from receiving "
                                     "a request to returning its reply to the WSGI server, by "
                                     "endpoint and status.", labels=["endpoint", "status"])
    for (endpoint, status), data in sorted(latency.items()):
        cumulative, buckets = 0, []
        for name, count in zip(_BUCKET_NAMES, data[2:]):
            cumulative += count
            buckets.append((name, cumulative))
        duration.add_metric([endpoint, str(status)], buckets, data[1])
    return [requests, duration]


class EdgeCollector:
    """The edge's own families for a registry, made on each scrape: the request counts, whether
    the router's status could be read, and the cluster's gauges and counters from it.

    `status` returns the router's status (the dict /stats shows) and raises when it cannot:
    yaddb_router_status_ok is then 0 and the cluster's families have no samples."""

    def __init__(self, counts: Counts, status: Callable[[], Any]) -> None:
        self.counts = counts
        self.status = status

    def collect(self) -> Iterator[Metric]:
        yield from http_families(self.counts.snapshot())
        try:
            status, ok = self.status(), 1.0
        except Exception:  # the provider's failure is the provider's to log; the scrape goes on
            status, ok = None, 0.0
        yield GaugeMetricFamily("yaddb_router_status_ok", "1 if the router's cluster view could "
                                "be read for this scrape.", value=ok)
        yield from cluster_families(status)


def edge_registry(counts: Counts, status: Callable[[], Any]) -> CollectorRegistry:
    """A registry of one app's own: its EdgeCollector, and the process's CPU, memory and fds."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(EdgeCollector(counts, status))
    ProcessCollector(registry=registry)
    return registry


def exposition(registry: CollectorRegistry, accept: Optional[str]) -> tuple[bytes, str]:
    """(body, Content-Type) of a scrape: the text format 0.0.4 by default, OpenMetrics or text
    1.0.0 when the Accept header asks for it (as Prometheus itself does)."""
    encoder, content_type = choose_encoder(accept or "")
    return encoder(registry), content_type
