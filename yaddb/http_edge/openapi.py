"""The OpenAPI 3.0.3 description of the HTTP edge (CONTRACT.md section 4), served at GET /openapi.json.

`SPEC` is the document as a dict, written out here by hand; `DOCUMENT` is its JSON, made once at
import. Every path of the Bottle app (routes.py) is here and nothing else is (a test compares
them), and each operation lists every status it answers: success, then the JSON errors
`{"error": "..."}` of statuses.py. A 500 is listed nowhere: it is always a bug, and
tests/http_edge/test_openapi_fuzz.py fuzzes a real router against this document to find one.

Request bodies carry their real rules (a key is 1 to 1024 bytes, sent as an even number of hex
digits; labels are at most 255 bytes; value_encoding is utf-8 or base64), so a fuzzer makes
both bodies the edge takes and bodies it refuses. Where the edge is more lenient than written
here (hex in upper case, blanks around a hex key, a port as a string of digits), the document
gives the form clients should send.

Security: with `--http-token` every operation but GET /ping needs `Authorization: Bearer
TOKEN`, and answers 401 without it; without a token the edge takes every request. Both are
said by the operations' `security`, a bearer scheme or nothing.
"""
from __future__ import annotations

import json

from yaddb.limits import MAX_KEY_BYTES, MAX_LABEL_BYTES, WRITE_CONCERNS

__all__ = ["SPEC", "DOCUMENT"]

JSON = "application/json"
HEX_KEY_PATTERN = "^([0-9a-fA-F]{2})+$"


def _ref(kind: str, name: str) -> dict:
    return {"$ref": f"#/components/{kind}/{name}"}


def _json(schema: dict) -> dict:
    return {JSON: {"schema": schema}}


def _text(schema: dict, media: str = "text/plain") -> dict:
    return {media: {"schema": schema}}


def _error(description: str) -> dict:
    return {"description": description, "content": _json(_ref("schemas", "Error"))}


def _errors(*statuses: int) -> dict:
    """The shared error responses (components.responses) for these statuses, by reference."""
    return {str(status): _ref("responses", _ERROR_RESPONSES[status][0]) for status in statuses}


_ERROR_RESPONSES = {
    400: ("BadRequest", "The request is malformed: bad JSON, a bad or empty key, a missing or "
                        "non-string field, a bad ?w=, a Content-Type this endpoint does not take."),
    401: ("Unauthorized", "The edge runs with --http-token and the request lacks "
                          "'Authorization: Bearer TOKEN' (a WWW-Authenticate header says so)."),
    404: ("NotFound", "No such key."),
    413: ("TooLarge", "The value or the request body is over the edge's limit; nothing was "
                      "stored. An oversized Content-Length gets this before the body is read, "
                      "on any endpoint."),
    503: ("Unavailable", "The database did not answer in time, or the key's partition has no "
                         "master that takes writes right now, or a write with ?w= above 1 was "
                         "not confirmed by enough members in time (it is applied on the master; "
                         "the message says where). The same request may succeed later."),
}

_WRITE_CONCERN = {
    "name": "w", "in": "query", "required": False,
    "description": "Write concern: how many members of the key's partition hold the write "
                   "before the reply (1, the default, is the master alone), or majority or "
                   "all of them. Above 1 the reply waits up to the replication timeout. "
                   "Given more than once: 400.",
    "schema": {"anyOf": [{"type": "integer", "minimum": 1, "maximum": 1000},
                         {"type": "string", "enum": list(WRITE_CONCERNS)}]},
}

_KEY_BODY = {
    "required": True,
    "description": "The key: its raw bytes as application/octet-stream, or its hex as "
                   "text/plain. With no Content-Type at all (as the seed's Python client "
                   "sends), a body of hex digits is a hex key and anything else raw bytes.",
    "content": {
        "application/octet-stream": {"schema": {"type": "string", "format": "binary",
                                                "minLength": 1, "maxLength": MAX_KEY_BYTES}},
        "text/plain": {"schema": _ref("schemas", "HexKey")},
    },
}

_SCHEMAS = {
    "Error": {
        "type": "object", "required": ["error"], "additionalProperties": False,
        "properties": {"error": {"type": "string", "minLength": 1,
                                 "description": "What was wrong, for a person."}},
    },
    "HexKey": {
        "type": "string", "pattern": HEX_KEY_PATTERN, "minLength": 2,
        "maxLength": 2 * MAX_KEY_BYTES,
        "description": f"A key of 1 to {MAX_KEY_BYTES} bytes as hex digits (replies use "
                       f"lower case).",
    },
    "Label": {
        "type": "string", "maxLength": MAX_LABEL_BYTES,
        "description": f"The user's own label, stored as given: at most {MAX_LABEL_BYTES} "
                       f"bytes in UTF-8.",
    },
    "Item": {
        "type": "object", "required": ["content_type", "encoding", "value"],
        "additionalProperties": False,
        "properties": {
            "content_type": {"type": "string"},
            "encoding": {"type": "string"},
            "value": {"type": "string", "description": "The value as text when its bytes are "
                      "UTF-8, else their base64 (and value_encoding is there)."},
            "value_encoding": {"type": "string", "enum": ["base64"],
                               "description": "Only when value is base64."},
        },
    },
    "ItemByKey": {
        "type": "object", "minProperties": 1, "maxProperties": 1,
        "additionalProperties": _ref("schemas", "Item"),
        "description": "One item under its key, in lower-case hex.",
    },
    "SetRequest": {
        "type": "object", "required": ["content_type", "encoding", "value"],
        "additionalProperties": False,
        "properties": {
            "key": _ref("schemas", "HexKey"),
            "content_type": _ref("schemas", "Label"),
            "encoding": _ref("schemas", "Label"),
            "value": {"type": "string", "description": "The value: its UTF-8 bytes are stored, "
                      "or, with value_encoding base64, the bytes it decodes to. Without key, "
                      "the key is key_for() of those bytes."},
            "value_encoding": {"type": "string", "enum": ["utf-8", "base64"],
                               "default": "utf-8"},
        },
    },
    "SubscribeRequest": {
        "type": "object", "required": ["ip", "port"], "additionalProperties": False,
        "properties": {
            "ip": {"type": "string", "minLength": 1, "maxLength": 253,
                   "pattern": "^\\S+$", "description": "Host name or address of a running node."},
            "port": {"type": "integer", "minimum": 1, "maximum": 65535},
            "master": {"type": "string", "pattern": "^\\S+:[0-9]{1,5}$",
                       "description": "host:port of the partition master to follow; without "
                                      "it, the master of the partition with the fewest slaves."},
        },
    },
    "Stats": {
        "type": "object", "required": ["partitions", "http_edge"],
        "description": "The router's view of the cluster: every partition, its master and "
                       "slaves, each node's role, liveness, key count and replication lag; "
                       "and the edge's own request counts.",
        "properties": {
            "partitions": {"type": "array", "items": {
                "type": "object", "required": ["index", "master", "alive", "slaves"],
                "properties": {"index": {"type": "integer", "minimum": 0},
                               "master": {"type": "string"},
                               "alive": {"type": "boolean"},
                               "keys": {"type": "integer", "nullable": True},
                               "slaves": {"type": "array", "items": {"type": "object"}}}}},
            "http_edge": {
                "type": "object",
                "required": ["requests", "requests_total", "uptime_s", "max_value_bytes",
                             "max_body_bytes"],
                "properties": {
                    "requests": {"type": "object", "description": "'METHOD /path' to "
                                 "{status: count}.", "additionalProperties": {
                                     "type": "object",
                                     "additionalProperties": {"type": "integer"}}},
                    "requests_total": {"type": "integer", "minimum": 0},
                    "uptime_s": {"type": "number", "minimum": 0},
                    "max_value_bytes": {"type": "integer"},
                    "max_body_bytes": {"type": "integer"}}},
        },
    },
    "Document": {"type": "object", "required": ["openapi", "info", "paths"]},
}


def _operation(summary: str, responses: dict, *, request_body: dict | None = None,
               parameters: list | None = None, open_: bool = False) -> dict:
    operation: dict = {"summary": summary}
    if parameters:
        operation["parameters"] = parameters
    if request_body is not None:
        operation["requestBody"] = request_body
    operation["responses"] = responses
    if open_:
        operation["security"] = []  # /ping needs no token, even with --http-token
    return operation


SPEC: dict = {
    "openapi": "3.0.3",
    "info": {
        "title": "YADDB HTTP edge",
        "version": "1",
        "description": "The router's HTTP edge (CONTRACT.md section 4). Every error is JSON "
                       "{\"error\": \"...\"} with a status listed under its operation; a path "
                       "not listed here gets 404 and a method a path does not take 405 (with "
                       "an Allow header), both JSON too. A 500 is a bug.",
    },
    "security": [{}, {"bearerAuth": []}],  # a token only when the edge runs with --http-token
    "paths": {
        "/ping": {"get": _operation("Liveness of the edge", {
            "200": {"description": "The edge answers.",
                    "content": _text({"type": "string", "enum": ["PONG"]})},
            **_errors(413),
        }, open_=True)},
        "/set": {"put": _operation("Store an item", {
            "200": {"description": "Stored (durable on the partition master; with ?w=, on as "
                                   "many members).",
                    "content": _json(_ref("schemas", "ItemByKey"))},
            **_errors(400, 401, 413, 503),
        }, parameters=[_WRITE_CONCERN], request_body={
            "required": True, "content": _json(_ref("schemas", "SetRequest"))})},
        "/query": {"post": _operation("Read the item at a key", {
            "200": {"description": "The item as stored.",
                    "content": _json(_ref("schemas", "ItemByKey"))},
            **_errors(400, 401, 404, 413, 503),
        }, request_body=_KEY_BODY)},
        "/delete": {"delete": _operation("Delete the item at a key", {
            "200": {"description": "Deleted.",
                    "content": _json({"type": "object", "required": ["deleted"],
                                      "additionalProperties": False,
                                      "properties": {"deleted": {"type": "string",
                                                                 "pattern": "^([0-9a-f]{2})+$"}}})},
            **_errors(400, 401, 404, 413, 503),
        }, parameters=[_WRITE_CONCERN], request_body=_KEY_BODY)},
        "/subscribe": {"post": _operation("Make a running node a slave of a partition master", {
            "200": {"description": "The node follows the master and catches up.",
                    "content": _text({"type": "string", "enum": ["Subscribed"]})},
            **_errors(400, 401, 413),
            "418": _error("I am not a master: the named master is not the master of any "
                          "partition (or this router cannot add slaves)."),
            **_errors(503),
        }, request_body={"required": True, "content": _json(_ref("schemas", "SubscribeRequest"))})},
        "/stats": {"get": _operation("The cluster as the router sees it", {
            "200": {"description": "Partitions, nodes and the edge's counts.",
                    "content": _json(_ref("schemas", "Stats"))},
            **_errors(401, 413, 503),
        })},
        "/metrics": {"get": _operation("Prometheus metrics", {
            "200": {"description": "Request counts and latencies by endpoint and status, "
                                   "per-node liveness and lag: the Prometheus text format "
                                   "0.0.4, or OpenMetrics when the Accept header asks for it.",
                    "content": {**_text({"type": "string"}, "text/plain; version=0.0.4"),
                                **_text({"type": "string"},
                                        "application/openmetrics-text; version=1.0.0")}},
            **_errors(401, 413),
        })},
        "/": {"get": _operation("The status page", {
            "200": {"description": "An HTML page that shows /stats.",
                    "content": _text({"type": "string"}, "text/html")},
            **_errors(401, 413),
        })},
        "/openapi.json": {"get": _operation("This document", {
            "200": {"description": "The OpenAPI description of the edge.",
                    "content": _json(_ref("schemas", "Document"))},
            **_errors(401, 413),
        })},
    },
    "components": {
        "securitySchemes": {"bearerAuth": {
            "type": "http", "scheme": "bearer",
            "description": "The edge's --http-token (YADDB_HTTP_TOKEN), when it runs with one."}},
        "schemas": _SCHEMAS,
        "responses": {name: _error(description)
                      for name, description in _ERROR_RESPONSES.values()},
    },
}

DOCUMENT = json.dumps(SPEC, separators=(",", ":")).encode("utf-8")
