"""The HTTP edge of the router: a Bottle app that reaches the database only through `yaddb.Client`.

    app = make_app(client_factory, status_provider)      # a bottle.Bottle (an EdgeApp)

Endpoints (CONTRACT section 4); every error is JSON `{"error": "<message for a person>"}`:

    GET    /ping       200 "PONG" (text/plain)
    PUT    /set        JSON {"key": hex (optional), "content_type": str, "encoding": str,
                       "value": str [, "value_encoding": "utf-8" | "base64"]}
                       -> 200 {"<hex key>": {item}}; 400, 413, 503
    POST   /query      the key: raw bytes (Content-Type: application/octet-stream) or its hex
                       (Content-Type: text/plain) -> 200 {"<hex key>": {item}}; 400, 404, 503
    DELETE /delete     the key, as for /query -> 200 {"deleted": "<hex key>"}; 400, 404, 503
    POST   /subscribe  JSON {"ip": str, "port": int [, "master": "host:port"]}
                       -> 200 "Subscribed" (text/plain); 400, 418, 503
    GET    /stats      200 JSON: the router's view (status_provider) plus "http_edge" counts
    GET    /metrics    200 Prometheus text format 0.0.4

Values in JSON
--------------
An item is `{"content_type": str, "encoding": str, "value": str}`. The stored value is bytes:

* When those bytes are valid UTF-8 (always so for values set over HTTP the ordinary way, and
  for str values set through the native client), `"value"` is that text, and the item has no
  other field.
* When they are not (bytes set through the native client, e.g. `c.set(k, b"\\xff\\x00")`),
  `"value"` is the standard base64 (RFC 4648, with padding) of the bytes and the item has one
  more field, `"value_encoding": "base64"`. That field appears only in this case, so a
  reader that sees no `value_encoding` can take `value` as the text it is.

`PUT /set` accepts the same optional field, so an item read over HTTP can be written back
unchanged: `"value_encoding": "base64"` stores the decoded bytes; `"utf-8"` (the default)
stores the UTF-8 bytes of `value`. Without a `key`, the key is `key_for()` of the stored bytes.
The item's own `encoding` label is never looked at: it is the user's, stored as given.

Keys travel as lowercase hex in every reply; /set and a text/plain /query or /delete accept
hex in either case (surrounding whitespace ignored). A raw (application/octet-stream) key is
taken byte for byte; if it is not found and it looks like hex, the 404 says to send hex as
text/plain: the edge never guesses which one was meant.

Size limits: a value over `max_value_bytes` gets 413 and nothing is stored. A request body
may be up to `max_body_bytes` (default 3 x max_value_bytes + 64 KiB, room for a largest value
as base64 or as JSON with every non-ASCII character escaped as \\uXXXX); a bigger
Content-Length gets 413 before the body is read. /query, /delete and /subscribe take bodies
of at most 64 KiB.

Threads: WSGI servers call the app from several threads and a ZeroMQ socket must never be
shared by threads, so each thread gets its own Client from `client_factory()` on first use
(threading.local). `EdgeApp.close()` closes them all once the server has stopped.
"""
from __future__ import annotations

import base64
import binascii
import logging
import sys
import threading
import time
from typing import Any, Callable, Optional

import bottle

from yaddb.client import Client
from yaddb.errors import (BadRequest, NotMaster, StorageError, Unavailable, ValueTooLarge,
                          YaddbError)
from yaddb.http_edge.metrics import (Counts, cluster_metrics, endpoint_label, http_metrics,
                                    method_label, node_name)
from yaddb.item import DEFAULT_MAX_VALUE_BYTES, MAX_LABEL_BYTES, key_for

from yaddb.http_edge.messages import (ENDPOINTS, JSON_TYPE, PROMETHEUS_TYPE, Reply,
                                       SET_FIELDS, SMALL_BODY_BYTES, TEXT_TYPE,
                                       default_max_body_bytes, error_reply, hex_key,
                                       item_json, json_bytes, json_kind, json_object,
                                       key_from_body, not_found, ok_json, http_reply,
                                       status_line, subscribe_fields, utf8)

__all__ = ["make_app", "EdgeApp", "item_json", "Subscriber", "SMALL_BODY_BYTES",
           "default_max_body_bytes"]

log = logging.getLogger("yaddb.http_edge")

Subscriber = Callable[[str, int, Optional[str]], Any]
StatusProvider = Callable[[], dict]

class _ThreadClients:
    """One Client per thread, made by `factory` on a thread's first request. (Bottle forbids
    rebinding an app's attributes, so this mutable state lives here.)"""

    def __init__(self, factory: Callable[[], Client]) -> None:
        self.factory = factory
        self._local = threading.local()
        self._all: list[Client] = []
        self._lock = threading.Lock()
        self._closed = False

    def get(self) -> Client:
        client = getattr(self._local, "client", None)
        if client is None:
            with self._lock:
                if self._closed:
                    raise Unavailable("the HTTP edge is shutting down")
                client = self.factory()
                self._all.append(client)
            self._local.client = client
        return client

    def __len__(self) -> int:
        with self._lock:
            return len(self._all)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            clients, self._all = self._all, []
        for client in clients:
            try:
                client.close()
            except Exception:  # closing must go on for the others
                log.exception("closing a client of the HTTP edge")


class EdgeApp(bottle.Bottle):
    """The Bottle app of the edge. On top of Bottle: per-thread Clients, request accounting,
    an early 413 on Content-Length, and JSON for every error Bottle itself would render."""

    def __init__(self, client_factory: Callable[[], Client], status_provider: StatusProvider,
                 max_value_bytes: int, max_body_bytes: int,
                 subscriber: Optional[Subscriber]) -> None:
        super().__init__(catchall=True)
        self.uninstall(True)  # no JSON/template plugins: every route returns bytes itself
        self.client_factory = client_factory
        self.status_provider = status_provider
        self.max_value_bytes = max_value_bytes
        self.max_body_bytes = max_body_bytes
        self.subscriber = subscriber
        self.counts = Counts()
        self.clients = _ThreadClients(client_factory)

    # -- clients -------------------------------------------------------------------------------

    def client(self) -> Client:
        """This thread's Client, created on first use."""
        return self.clients.get()

    def close(self) -> None:
        """Close every thread's Client (call it once the server's threads have stopped)."""
        self.clients.close()
        super().close()

    # -- WSGI ----------------------------------------------------------------------------------

    def wsgi(self, environ: dict, start_response: Callable) -> list:
        started = time.perf_counter()
        method = environ.get("REQUEST_METHOD", "GET")
        status = 500
        try:
            length = environ.get("CONTENT_LENGTH")
            if length and length.isdigit() and int(length) > self.max_body_bytes:
                # Before the body is read, whatever the route: no endpoint takes this much.
                status = 413
                body = json_bytes({"error": f"the request body is {int(length)} bytes; the "
                                             f"limit is {self.max_body_bytes}"})
                start_response(status_line(413), [("Content-Type", JSON_TYPE),
                                                   ("Content-Length", str(len(body)))])
                return [body]
            try:
                out = self._cast(self._handle(environ))
                status = bottle.response.status_code
                if status in (100, 101, 204, 304) or method == "HEAD":
                    if hasattr(out, "close"):
                        out.close()
                    out = []
                exc_info = environ.pop("bottle.exc_info", None)
                start_response(bottle.response._wsgi_status_line(), bottle.response.headerlist,
                               exc_info)
                return out
            except (KeyboardInterrupt, SystemExit, MemoryError):
                raise
            except Exception:
                # Bottle would send an HTML page here; the edge sends JSON.
                log.exception("HTTP edge: %s %s failed", method, environ.get("PATH_INFO"))
                status = 500
                body = json_bytes({"error": "internal error in the HTTP edge; the router's "
                                             "log has the details"})
                start_response(status_line(500), [("Content-Type", JSON_TYPE),
                                                   ("Content-Length", str(len(body)))],
                               sys.exc_info())
                return [body]
        finally:
            self.counts.record(endpoint_label(environ.get("PATH_INFO", "")),
                               method_label(method), status, time.perf_counter() - started)

    def default_error_handler(self, res: bottle.HTTPError) -> bytes:
        """Every HTTPError Bottle raises (no route, wrong method, an uncaught exception -> 500,
        ...) becomes JSON; the status and headers such as Allow are already on `response`."""
        status = res.status_code
        if status == 404:
            message = (f"no such endpoint: {bottle.request.method[:20]} {bottle.request.path[:200]}; "
                       f"the endpoints are " + ", ".join(f"{m} {p}" for m, p in ENDPOINTS))
        elif status == 405:
            allowed = res.headers.get("Allow") or ""
            message = (f"{bottle.request.path} does not take {bottle.request.method[:20]}; use "
                       f"{allowed or 'another method'}")
        elif status >= 500:
            if res.exception is not None:
                log.error("HTTP edge: %s %s failed:\n%s", bottle.request.method,
                          bottle.request.path, res.traceback or res.exception)
            message = "internal error in the HTTP edge; the router's log has the details"
        else:
            message = res.body if isinstance(res.body, str) and res.body else res.status_line
        bottle.response.content_type = JSON_TYPE
        return json_bytes({"error": message})

    # -- endpoints -----------------------------------------------------------------------------

    def on_ping(self) -> Reply:
        return http_reply(200, b"PONG", TEXT_TYPE)

    def on_set(self) -> Reply:
        doc = json_object(bottle.request.environ, self.max_body_bytes)
        unknown = sorted(set(doc) - set(SET_FIELDS))
        if unknown:
            raise error_reply(400, f"unknown field(s) {', '.join(map(repr, unknown))}; an item is "
                              f'"key" (hex, optional), "content_type", "encoding", "value" and '
                              f'optionally "value_encoding"')
        missing = [f for f in ("content_type", "encoding", "value") if f not in doc]
        if missing:
            raise error_reply(400, f"missing field(s): {', '.join(missing)}; an item needs "
                              f'"content_type", "encoding" and "value" (all strings), and '
                              f'optionally "key" (hex)')
        not_str = [f"{f} is a JSON {json_kind(doc[f])}" for f in SET_FIELDS
                   if f in doc and not isinstance(doc[f], str)]
        if not_str:
            raise error_reply(400, f"fields must be strings: {'; '.join(not_str)}")
        for field in ("content_type", "encoding"):
            if len(utf8(doc[field], field)) > MAX_LABEL_BYTES:
                raise error_reply(400, f'"{field}" is {len(utf8(doc[field], field))} bytes in UTF-8; '
                                  f"the limit is {MAX_LABEL_BYTES}")
        value_encoding = doc.get("value_encoding", "utf-8").lower()
        if value_encoding in ("utf-8", "utf8"):
            value = utf8(doc["value"], "value")
        elif value_encoding == "base64":
            try:
                value = base64.b64decode(doc["value"], validate=True)
            except (binascii.Error, ValueError):
                raise error_reply(400, '"value" is not valid base64, as "value_encoding" says') from None
        else:
            raise error_reply(400, f'"value_encoding" must be "utf-8" (the default) or "base64", '
                              f"not {doc['value_encoding']!r}")
        if len(value) > self.max_value_bytes:
            raise error_reply(413, f"the value is {len(value)} bytes; the limit is "
                              f"{self.max_value_bytes}; nothing was stored")
        key = hex_key(doc["key"], '"key"') if "key" in doc else key_for(value)
        try:
            self.client().set(key, value, content_type=doc["content_type"],
                              encoding=doc["encoding"])
        except YaddbError as exc:
            raise _database_error(exc) from None
        return ok_json({key.hex(): item_json(doc["content_type"], doc["encoding"], value)})

    def on_query(self) -> Reply:
        key, raw = key_from_body(bottle.request.environ)
        try:
            item = self.client().get(key)
        except YaddbError as exc:
            raise _database_error(exc) from None
        if item is None:
            raise not_found(key, raw)
        return ok_json({key.hex(): item_json(item.content_type, item.encoding, item.value)})

    def on_delete(self) -> Reply:
        key, raw = key_from_body(bottle.request.environ)
        try:
            existed = self.client().delete(key)
        except YaddbError as exc:
            raise _database_error(exc) from None
        if not existed:
            raise not_found(key, raw)
        return ok_json({"deleted": key.hex()})

    def on_subscribe(self) -> Reply:
        doc = json_object(bottle.request.environ, SMALL_BODY_BYTES)
        ip, port, master = subscribe_fields(doc)
        if master is not None:
            masters = self._masters()
            if master not in masters:
                known = ", ".join(sorted(masters)) or "none known"
                raise error_reply(418, f"I am not a master: {master} is not the master of any "
                                  f"partition (the masters are: {known})")
        if self.subscriber is None:
            raise error_reply(418, "I am not a master: this router cannot add slaves to a partition "
                              "yet (subscribing is not supported in this build)")
        try:
            self.subscriber(ip, port, master)
        except NotMaster as exc:
            raise error_reply(418, f"I am not a master: {exc}") from None
        except (BadRequest, Unavailable) as exc:
            raise error_reply(exc.http_status, str(exc)) from None
        return http_reply(200, b"Subscribed", TEXT_TYPE)

    def on_stats(self) -> Reply:
        status = self._status()
        doc = dict(status) if isinstance(status, dict) else {"status": status}
        doc["http_edge"] = self._edge_stats()
        return ok_json(doc)

    def on_metrics(self) -> Reply:
        try:
            status = self._status()
        except Reply:
            status = {}
            scrape_ok = 0
        else:
            scrape_ok = 1
        lines = http_metrics(self.counts.snapshot())
        lines += ["# HELP yaddb_router_status_ok 1 if the router's cluster view could be read "
                  "for this scrape.",
                  "# TYPE yaddb_router_status_ok gauge",
                  f"yaddb_router_status_ok {scrape_ok}"]
        lines += cluster_metrics(status)
        return http_reply(200, ("\n".join(lines) + "\n").encode("utf-8"), PROMETHEUS_TYPE)

    # -- helpers -------------------------------------------------------------------------------

    def _status(self) -> dict:
        try:
            return self.status_provider()
        except Exception as exc:
            log.exception("HTTP edge: the router's status provider failed")
            raise error_reply(503, f"the router cannot report the cluster's state: {exc}") from None

    def _masters(self) -> set[str]:
        status = self._status()
        partitions = status.get("partitions") if isinstance(status, dict) else None
        masters = set()
        for partition in partitions if isinstance(partitions, list) else []:
            if isinstance(partition, dict):
                name = node_name(partition.get("master"))
                if name is not None:
                    masters.add(name)
        return masters

    def _edge_stats(self) -> dict:
        requests: dict[str, dict[str, int]] = {}
        total = 0
        for (endpoint, method, status), data in sorted(self.counts.snapshot().items()):
            requests.setdefault(f"{method} {endpoint}", {})[str(status)] = data[0]
            total += data[0]
        return {"requests": requests, "requests_total": total,
                "uptime_s": round(time.time() - self.counts.started, 3),
                "max_value_bytes": self.max_value_bytes, "max_body_bytes": self.max_body_bytes}


def _database_error(exc: YaddbError) -> Reply:
    if isinstance(exc, ValueTooLarge):
        return error_reply(413, f"{exc}; nothing was stored")
    if isinstance(exc, BadRequest):
        return error_reply(400, str(exc))
    if isinstance(exc, Unavailable):
        return error_reply(503, f"the database did not answer: {exc}")
    if isinstance(exc, NotMaster):
        return error_reply(503, f"the key's partition has no master that takes writes right now: {exc}")
    if isinstance(exc, StorageError):
        log.error("HTTP edge: storage error: %s", exc)
        return error_reply(500, f"the storage node failed: {exc}")
    log.error("HTTP edge: %s: %s", type(exc).__name__, exc)
    return error_reply(exc.http_status if 400 <= exc.http_status < 600 else 500, str(exc))


def make_app(client_factory: Callable[[], Client], status_provider: StatusProvider,
             max_value_bytes: int = DEFAULT_MAX_VALUE_BYTES, *,
             subscriber: Optional[Subscriber] = None,
             max_body_bytes: Optional[int] = None) -> EdgeApp:
    """The edge as a Bottle app.

    client_factory   returns a new Client; called once per server thread, on first use.
    status_provider  returns the router's view: {"partitions": [{"index", "master", "alive",
                     "slaves", "keys", "lag", ...}, ...], ...}; /stats shows it as it is,
                     /metrics reads liveness, keys and lag from it.
    subscriber       subscriber(ip, port, master or None) makes the node a slave (raising
                     NotMaster, BadRequest or Unavailable); None: /subscribe answers 418.
    max_body_bytes   largest request body; default 3 x max_value_bytes + 64 KiB.
    """
    if max_body_bytes is None:
        max_body_bytes = default_max_body_bytes(max_value_bytes)
    app = EdgeApp(client_factory, status_provider, max_value_bytes, max_body_bytes, subscriber)
    app.route("/ping", "GET", app.on_ping)
    app.route("/set", "PUT", app.on_set)
    app.route("/query", "POST", app.on_query)
    app.route("/delete", "DELETE", app.on_delete)
    app.route("/subscribe", "POST", app.on_subscribe)
    app.route("/stats", "GET", app.on_stats)
    app.route("/metrics", "GET", app.on_metrics)
    for status in (400, 404, 405, 413, 500, 503):
        app.error_handler[status] = app.default_error_handler
    return app
