"""The edge's endpoints (CONTRACT.md section 4) on a plain Bottle app; app.py wraps it.

Each handler parses its request (messages.py), calls the database through this thread's
`yaddb.Client`, and maps what the database raises to a status through the one table in
statuses.py. Handlers return or raise a finished `Reply`; nothing here touches Bottle's
internals, so the app is an ordinary `bottle.Bottle`.
"""
from __future__ import annotations

import logging
import threading
import time
from typing import Any, Callable, Optional

import bottle

from yaddb.client import Client
from yaddb.errors import NotMaster, Unavailable, YaddbError
from yaddb.http_edge import openapi, status_page
from yaddb.http_edge.messages import (HTML_TYPE, JSON_TYPE, SMALL_BODY_BYTES,
                                      TEXT_TYPE, Reply,
                                      error_reply, hex_key, http_reply, item_json, json_object,
                                      key_from_body, not_found, ok_json, set_fields,
                                      subscribe_fields, value_bytes)
from yaddb.http_edge.metrics import Counts, edge_registry, exposition, node_name
from yaddb.http_edge.statuses import database_error, error_status, json_error_handler
from yaddb.item import encode_item, key_for
from yaddb.limits import check_write_concern

__all__ = ["ThreadClients", "Endpoints", "Subscriber", "StatusProvider"]

log = logging.getLogger("yaddb.http_edge")

Subscriber = Callable[[str, int, Optional[str]], Any]
StatusProvider = Callable[[], dict]


class ThreadClients:
    """One Client per thread, made by `factory` on a thread's first request: WSGI servers call
    the app from several threads, and a ZeroMQ socket must never be shared by threads."""

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


class Endpoints:
    """The handlers, sharing the per-thread Clients, the limits and the request counts."""

    def __init__(self, clients: ThreadClients, status_provider: StatusProvider,
                 max_value_bytes: int, max_body_bytes: int, subscriber: Optional[Subscriber],
                 counts: Counts) -> None:
        self.clients = clients
        self.status_provider = status_provider
        self.max_value_bytes = max_value_bytes
        self.max_body_bytes = max_body_bytes
        self.subscriber = subscriber
        self.counts = counts
        # This app's own registry, reading the counts and the router's status when scraped.
        self.metrics_registry = edge_registry(counts, self._status)

    def bottle_app(self) -> bottle.Bottle:
        """A plain Bottle app with the routes, and JSON for the errors Bottle raises itself.

        catchall=False: an exception a handler does not turn into a Reply leaves Bottle, and
        the WSGI wrapper around it (app.py) logs it once and answers a JSON 500; Bottle would
        write its own traceback to wsgi.errors and, past its error handlers, an HTML page."""
        app = bottle.Bottle()
        app.config["catchall"] = False
        app.uninstall(True)  # no JSON/template plugins: every handler returns bytes itself
        app.route("/ping", "GET", self.on_ping)
        app.route("/set", "PUT", self.on_set)
        app.route("/query", "POST", self.on_query)
        app.route("/delete", "DELETE", self.on_delete)
        app.route("/subscribe", "POST", self.on_subscribe)
        app.route("/stats", "GET", self.on_stats)
        app.route("/metrics", "GET", self.on_metrics)
        app.route("/", "GET", self.on_status_page)
        app.route("/openapi.json", "GET", self.on_openapi)
        for status in bottle.HTTP_CODES:
            if status >= 400:
                app.error(status, callback=json_error_handler)
        return app

    # -- endpoints -----------------------------------------------------------------------------

    def on_ping(self) -> Reply:
        return http_reply(200, b"PONG", TEXT_TYPE)

    def on_set(self) -> Reply:
        doc = set_fields(json_object(bottle.request.environ, self.max_body_bytes))
        value = value_bytes(doc)
        content_type, encoding = doc["content_type"], doc["encoding"]
        try:
            # The item code judges value size and labels (BadRequest, ValueTooLarge: 413), with
            # this edge's limit, which may be below the Client's; before anything is sent, so
            # a refused item is never stored.
            encode_item(content_type, encoding, value, self.max_value_bytes)
            key = hex_key(doc["key"], '"key"') if "key" in doc else key_for(value)
            self.clients.get().set(key, value, content_type=content_type, encoding=encoding,
                                   w=_write_concern())
        except YaddbError as exc:
            raise database_error(exc) from None
        return ok_json({key.hex(): item_json(content_type, encoding, value)})

    def on_query(self) -> Reply:
        key, raw = key_from_body(bottle.request.environ)
        try:
            item = self.clients.get().get(key)
        except YaddbError as exc:
            raise database_error(exc) from None
        if item is None:
            raise not_found(key, raw)
        return ok_json({key.hex(): item_json(item.content_type, item.encoding, item.value)})

    def on_delete(self) -> Reply:
        key, raw = key_from_body(bottle.request.environ)
        try:
            existed = self.clients.get().delete(key, w=_write_concern())
        except YaddbError as exc:
            raise database_error(exc) from None
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
            # The contract's answer for /subscribe (the table's 503 is for writes).
            raise error_reply(418, f"I am not a master: {exc}") from None
        except YaddbError as exc:
            # The subscriber's messages already speak of the node; only the status is looked up.
            raise error_reply(error_status(exc).status, str(exc)) from None
        return http_reply(200, b"Subscribed", TEXT_TYPE)

    def on_stats(self) -> Reply:
        status = self._status()
        doc = dict(status) if isinstance(status, dict) else {"status": status}
        doc["http_edge"] = self._edge_stats()
        return ok_json(doc)

    def on_metrics(self) -> Reply:
        body, content_type = exposition(self.metrics_registry, bottle.request.get_header("Accept"))
        return http_reply(200, body, content_type)

    def on_status_page(self) -> Reply:
        return http_reply(200, status_page.PAGE, HTML_TYPE)

    def on_openapi(self) -> Reply:
        return http_reply(200, openapi.DOCUMENT, JSON_TYPE)

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


def _write_concern() -> Optional[Any]:
    """The request's `?w=` (1, a number of members, majority or all), or None for the
    client's default; BadRequest (400) for anything else."""
    query = bottle.request.query
    if len(query.getall("w")) > 1:  # Bottle would take the last one: the caller meant which?
        raise error_reply(400, "w is given more than once; give it once: a number of members, "
                               "majority or all")
    w = query.getunicode("w")
    if w is None and "w" in query:  # getunicode's None: not UTF-8
        raise error_reply(400, "w is not UTF-8 text; it must be a number of members, "
                               "majority or all")
    return None if w is None else check_write_concern(w)
