"""Request accounting of the HTTP edge, and the Prometheus text format (0.0.4) of /metrics.

Written by hand: two metric families of our own plus three gauges read from the router's
status, which does not justify a dependency.

    yaddb_http_requests_total{endpoint, method, status}              counter
    yaddb_http_request_duration_seconds{endpoint, status}            histogram
    yaddb_router_status_ok                                           gauge (set by the app)
    yaddb_node_up{partition, node, role}                             gauge, 1 or 0
    yaddb_replication_lag{partition, node, role="slave"}             gauge, in writes
    yaddb_node_keys{partition, node, role}                           gauge
    yaddb_refused_total{node, reason}                                counter (with CURVE):
        peers and requests a node (or node="router", the router's front) refused, by reason:
        handshake (no key, not ZeroMQ), unknown_key, not_permitted (a client key asking
        for a member's operation)

`endpoint` is one of the edge's paths or "other" and `method` one of the usual methods or
"OTHER", so what a client sends cannot grow the number of series.
"""
from __future__ import annotations

import math
import threading
import time
from typing import Any, Iterable, Optional

__all__ = ["Counts", "http_metrics", "cluster_metrics", "node_name", "endpoint_label",
           "method_label", "LATENCY_BUCKETS"]

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
        index = 0
        for index, bound in enumerate(LATENCY_BUCKETS):
            if seconds <= bound:
                break
        else:
            index = len(LATENCY_BUCKETS)
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
# Prometheus text format 0.0.4, written by hand (a few counters and one histogram)
# ---------------------------------------------------------------------------------------------

def _label_value(value: Any) -> str:
    return str(value).replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labels(**labels: Any) -> str:
    return "{" + ",".join(f'{name}="{_label_value(value)}"' for name, value in labels.items()) + "}"


def _number(value: Any) -> Optional[str]:
    """A sample value, or None for something that is not a number."""
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "NaN"
        if math.isinf(value):
            return "+Inf" if value > 0 else "-Inf"
        return repr(value)
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


def _refused(node: str, counts: Any) -> list[str]:
    if not isinstance(counts, dict):
        return []
    return [f"yaddb_refused_total{_labels(node=node, reason=reason)} {_number(count)}"
            for reason, count in sorted(counts.items()) if _number(count) is not None]


def cluster_metrics(status: dict) -> list[str]:
    up, lag, keys = [], [], []
    refused = _refused("router", status.get("refused")) if isinstance(status, dict) else []
    partitions = status.get("partitions") if isinstance(status, dict) else None
    for position, partition in enumerate(partitions if isinstance(partitions, list) else []):
        if not isinstance(partition, dict):
            continue
        index = partition.get("index", position)
        for name, role, fields in partition_nodes(partition):
            labels = _labels(partition=index, node=name, role=role)
            alive = _number(fields.get("alive"))
            if alive is not None:
                up.append(f"yaddb_node_up{labels} {alive}")
            if role == "slave" and _number(fields.get("lag")) is not None:
                lag.append(f"yaddb_replication_lag{labels} {_number(fields['lag'])}")
            if _number(fields.get("keys")) is not None:
                keys.append(f"yaddb_node_keys{labels} {_number(fields['keys'])}")
            refused += _refused(name, fields.get("refused"))
    lines = ["# HELP yaddb_node_up 1 if the router reaches the node, 0 if not.",
             "# TYPE yaddb_node_up gauge", *up,
             "# HELP yaddb_replication_lag How far a slave is behind its master, in writes "
             "(write-log sequence numbers).",
             "# TYPE yaddb_replication_lag gauge", *lag,
             "# HELP yaddb_node_keys Keys a node holds, as the node last reported.",
             "# TYPE yaddb_node_keys gauge", *keys,
             "# HELP yaddb_refused_total Peers and requests refused for want of the right "
             "CURVE key, by node (or the router) and reason.",
             "# TYPE yaddb_refused_total counter", *refused]
    return lines


def http_metrics(series: dict[tuple[str, str, int], list]) -> list[str]:
    lines = ["# HELP yaddb_http_requests_total HTTP requests answered by the edge, by endpoint, "
             "method and status.",
             "# TYPE yaddb_http_requests_total counter"]
    for (endpoint, method, status), data in sorted(series.items()):
        lines.append(f"yaddb_http_requests_total"
                     f"{_labels(endpoint=endpoint, method=method, status=status)} {data[0]}")
    latency: dict[tuple[str, int], list] = {}
    for (endpoint, _method, status), data in series.items():
        merged = latency.setdefault((endpoint, status), [0] * len(data))
        for i, value in enumerate(data):
            merged[i] += value
    lines += ["# HELP yaddb_http_request_duration_seconds Time from receiving a request to "
              "returning its reply to the WSGI server, by endpoint and status.",
              "# TYPE yaddb_http_request_duration_seconds histogram"]
    for (endpoint, status), data in sorted(latency.items()):
        cumulative = 0
        for bound, count in zip(LATENCY_BUCKETS + (math.inf,), data[2:]):
            cumulative += count
            le = "+Inf" if math.isinf(bound) else repr(bound)
            lines.append(f"yaddb_http_request_duration_seconds_bucket"
                         f"{_labels(endpoint=endpoint, status=status, le=le)} {cumulative}")
        labels = _labels(endpoint=endpoint, status=status)
        lines.append(f"yaddb_http_request_duration_seconds_sum{labels} {data[1]!r}")
        lines.append(f"yaddb_http_request_duration_seconds_count{labels} {data[0]}")
    return lines


