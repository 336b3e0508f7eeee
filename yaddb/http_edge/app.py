"""The HTTP edge of the router: a WSGI app that reaches the database only through `yaddb.Client`.

    app = make_app(client_factory, status_provider)      # an EdgeApp, a WSGI callable
    EdgeServer(app, host, port).start()                  # server.py; app.close() once stopped

Endpoints (CONTRACT section 4); every error is JSON `{"error": "<message for a person>"}`:

    GET    /ping       200 "PONG" (text/plain)
    PUT    /set        JSON {"key": hex (optional), "content_type": str, "encoding": str,
                       "value": str [, "value_encoding": "utf-8" | "base64"]}; ?w=1|N|majority|all
                       -> 200 {"<hex key>": {item}}; 400, 413, 503 (ReplicationTimeout too)
    POST   /query      the key: raw bytes (Content-Type: application/octet-stream) or its hex
                       (Content-Type: text/plain); with no Content-Type, hex digits are a hex
                       key and anything else raw bytes -> 200 {"<hex key>": {item}}; 400, 404, 503
    DELETE /delete     the key, as for /query; ?w= as for /set -> 200 {"deleted": "<hex key>"};
                       400, 404, 503
    POST   /subscribe  JSON {"ip": str, "port": int [, "master": "host:port"]}
                       -> 200 "Subscribed" (text/plain); 400, 418, 503
    GET    /stats      200 JSON: the router's view (status_provider) plus "http_edge" counts
    GET    /metrics    200 Prometheus text format 0.0.4 (OpenMetrics when Accept asks for it),
                       written by prometheus_client (metrics.py)
    GET    /           200 the status page (HTML polling /stats; status_page.html)
    GET    /openapi.json  200 this list as an OpenAPI 3.0.3 document (openapi.py)

With a token (`--http-token`), every endpoint but /ping needs `Authorization: Bearer TOKEN`;
anything else gets 401 before the request is looked at further (CONTRACT section 8).

Layers: `EdgeApp` (here) is WSGI middleware around a plain Bottle app (routes.py). It refuses
an oversized Content-Length before anything reads the body, counts every request by the status
it sees passed to `start_response`, and turns anything that escapes Bottle into a JSON 500.
Exceptions from the database become statuses through the one table in statuses.py.

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

Size limits: a value over `max_value_bytes` gets 413 and nothing is stored (the item code,
`yaddb.item.encode_item`, judges values and labels). A request body may be up to
`max_body_bytes` (default 3 x max_value_bytes + 64 KiB, room for a largest value as base64
or as JSON with every non-ASCII character escaped as \\uXXXX); a bigger Content-Length gets
413 before the body is read. /query, /delete and /subscribe take bodies of at most 64 KiB.

Threads: each server thread gets its own Client from `client_factory()` on first use
(routes.ThreadClients); `EdgeApp.close()` closes them all once the server has stopped.
"""
from __future__ import annotations

import hmac
import logging
import sys
import time
from typing import Callable, Iterable, Optional

from yaddb.client import Client
from yaddb.http_edge.messages import (JSON_TYPE, SMALL_BODY_BYTES, default_max_body_bytes,
                                      item_json, json_bytes, status_line)
from yaddb.http_edge.metrics import Counts, endpoint_label, method_label
from yaddb.http_edge.routes import Endpoints, StatusProvider, Subscriber, ThreadClients
from yaddb.http_edge.statuses import INTERNAL_ERROR
from yaddb.limits import DEFAULT_MAX_VALUE_BYTES
from yaddb.transport.curve import Refusals

__all__ = ["make_app", "EdgeApp", "item_json", "Subscriber", "StatusProvider",
           "SMALL_BODY_BYTES", "default_max_body_bytes"]

log = logging.getLogger("yaddb.http_edge")

StartResponse = Callable[..., Callable[[bytes], object]]


class EdgeApp:
    """The edge as one WSGI callable: request accounting and the early 413 around `self.bottle`,
    a plain Bottle app with the endpoints (routes.py)."""

    def __init__(self, client_factory: Callable[[], Client], status_provider: StatusProvider,
                 max_value_bytes: int, max_body_bytes: int,
                 subscriber: Optional[Subscriber], http_token: Optional[str] = None) -> None:
        self.token = None if http_token is None else f"Bearer {http_token}".encode()
        self.refusals = Refusals("HTTP edge")  # counted in /stats and /metrics as 401s
        self.max_value_bytes = max_value_bytes
        self.max_body_bytes = max_body_bytes
        self.counts = Counts()
        self.clients = ThreadClients(client_factory)
        self.endpoints = Endpoints(self.clients, status_provider, max_value_bytes,
                                   max_body_bytes, subscriber, self.counts)
        self.bottle = self.endpoints.bottle_app()

    def close(self) -> None:
        """Close every thread's Client (call it once the server's threads have stopped)."""
        self.clients.close()
        self.bottle.close()

    def __call__(self, environ: dict, start_response: StartResponse) -> Iterable[bytes]:
        started = time.perf_counter()
        sent = [500]  # the status passed on to the server; 500 if none ever is

        def recording_start_response(status: str, headers: list, exc_info=None):
            sent[0] = int(status.split(" ", 1)[0])
            return start_response(status, headers, exc_info)

        method = environ.get("REQUEST_METHOD", "GET")
        try:
            if self.token is not None and not self._authorized(environ):
                self.refusals.note("request_without_the_right_token",
                                   f"from {environ.get('REMOTE_ADDR')}")
                return _json_reply(recording_start_response, 401,
                                   "this edge needs a token: send the header 'Authorization: "
                                   "Bearer TOKEN' with the edge's --http-token",
                                   headers=[("WWW-Authenticate", 'Bearer realm="yaddb"')])
            length = environ.get("CONTENT_LENGTH")
            if length and length.isdigit() and int(length) > self.max_body_bytes:
                # Before the body is read, whatever the route: no endpoint takes this much.
                return _json_reply(recording_start_response, 413,
                                   f"the request body is {int(length)} bytes; the limit is "
                                   f"{self.max_body_bytes}")
            try:
                return self.bottle(environ, recording_start_response)
            except Exception:
                # A bug: the handlers turn every expected failure into a Reply.
                log.exception("HTTP edge: %s %s failed", method, environ.get("PATH_INFO"))
                return _json_reply(recording_start_response, 500, INTERNAL_ERROR, sys.exc_info())
        finally:
            self.counts.record(endpoint_label(environ.get("PATH_INFO", "")),
                               method_label(method), sent[0], time.perf_counter() - started)


    def _authorized(self, environ: dict) -> bool:
        """/ping is open; everything else needs the token, compared in constant time."""
        if environ.get("PATH_INFO") == "/ping":
            return True
        given = environ.get("HTTP_AUTHORIZATION", "").encode("latin-1", "replace")
        scheme, _, token = given.partition(b" ")
        return scheme.lower() == b"bearer" and hmac.compare_digest(
            b"Bearer " + token.strip(), self.token)


def _json_reply(start_response: StartResponse, status: int, message: str,
                exc_info=None, headers: Iterable[tuple[str, str]] = ()) -> list[bytes]:
    body = json_bytes({"error": message})
    start_response(status_line(status), [("Content-Type", JSON_TYPE),
                                         ("Content-Length", str(len(body))), *headers], exc_info)
    return [body]


def make_app(client_factory: Callable[[], Client], status_provider: StatusProvider,
             max_value_bytes: int = DEFAULT_MAX_VALUE_BYTES, *,
             subscriber: Optional[Subscriber] = None,
             max_body_bytes: Optional[int] = None,
             http_token: Optional[str] = None) -> EdgeApp:
    """The edge as a WSGI app.

    client_factory   returns a new Client; called once per server thread, on first use.
    status_provider  returns the router's view: {"partitions": [{"index", "master", "alive",
                     "slaves", "keys", "lag", ...}, ...], ...}; /stats shows it as it is,
                     /metrics reads liveness, keys and lag from it.
    subscriber       subscriber(ip, port, master or None) makes the node a slave (raising
                     NotMaster, BadRequest or Unavailable); None: /subscribe answers 418.
    max_body_bytes   largest request body; default 3 x max_value_bytes + 64 KiB.
    http_token       when given, every endpoint but /ping needs "Authorization: Bearer" it.
    """
    if max_body_bytes is None:
        max_body_bytes = default_max_body_bytes(max_value_bytes)
    return EdgeApp(client_factory, status_provider, max_value_bytes, max_body_bytes, subscriber,
                   http_token)
