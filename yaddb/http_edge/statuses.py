"""From an exception to the HTTP reply the edge sends: one table, looked up along the MRO.

As redis-py maps an error code to a class through one dict (`EXCEPTION_CLASSES`), the edge maps
a YADDB exception class to its HTTP status through `STATUS_BY_ERROR`. A class not in the table
takes the entry of its nearest listed ancestor (`InvalidKey` that of `BadRequest`,
`YaddbTimeout` that of `Unavailable`, `CorruptionError` that of `StorageError`), and
`YaddbError` itself is listed, so every YADDB error has a status.

The statuses are those of CONTRACT.md section 4. Two differ from `YaddbError.http_status`,
on purpose: NotMaster is 503 here, because the edge meets it only on a write whose partition
has no master taking writes right now (the same write can succeed later); the 418
"I am not a master" of /subscribe is that endpoint's own answer (routes.py). And every
StorageError is a 500: the node failed, not the request.

Also here: Bottle's error handler, so the errors Bottle raises itself (no route, wrong
method) are JSON like every other error.
"""
from __future__ import annotations

import logging
from typing import NamedTuple

import bottle

from yaddb.errors import (BadMessage, BadRequest, NotApplied, NotMaster, ReplicationTimeout,
                          StorageError, Unavailable, ValueTooLarge, YaddbError)
from yaddb.http_edge.messages import ENDPOINTS, JSON_TYPE, Reply, error_reply, json_bytes

__all__ = ["ErrorStatus", "STATUS_BY_ERROR", "error_status", "database_error",
           "json_error_handler", "INTERNAL_ERROR"]

log = logging.getLogger("yaddb.http_edge")

INTERNAL_ERROR = "internal error in the HTTP edge; the router's log has the details"


class ErrorStatus(NamedTuple):
    status: int
    message: str = "{}"      # the reply's message; {} is the exception's own
    logged: bool = False     # worth a line in the router's log: someone must look


STATUS_BY_ERROR: dict[type[YaddbError], ErrorStatus] = {
    ValueTooLarge: ErrorStatus(413, "{}; nothing was stored"),
    BadRequest: ErrorStatus(400),
    # The node could not decode what the edge sent: edge and node disagree on the wire format.
    BadMessage: ErrorStatus(400, logged=True),
    NotMaster: ErrorStatus(503, "the key's partition has no master that takes writes right "
                                "now: {}"),
    # The master answered: the write is applied there, and the message says on how many more.
    ReplicationTimeout: ErrorStatus(503),
    NotApplied: ErrorStatus(503),  # a refusal that says why and that nothing was applied
    Unavailable: ErrorStatus(503, "the database did not answer: {}"),
    StorageError: ErrorStatus(500, "the storage node failed: {}", logged=True),
    YaddbError: ErrorStatus(500, logged=True),
}


def error_status(exc: YaddbError) -> ErrorStatus:
    """The table's entry for exc's class or its nearest listed ancestor."""
    for cls in type(exc).__mro__:
        entry = STATUS_BY_ERROR.get(cls)
        if entry is not None:
            return entry
    raise TypeError(f"{type(exc).__name__} is not a YaddbError; the edge maps only those")


def database_error(exc: YaddbError) -> Reply:
    """The JSON error reply for an exception from the database (the Client or the item code)."""
    entry = error_status(exc)
    if entry.logged:
        log.error("HTTP edge: %s: %s", type(exc).__name__, exc)
    return error_reply(entry.status, entry.message.format(exc))


def json_error_handler(error: bottle.HTTPError) -> bytes:
    """Bottle's handler for the HTTPErrors it raises itself (no route 404, wrong method 405,
    ...): JSON {"error": ...}. Bottle has already put the status and headers such as Allow on
    `bottle.response`. Its error handlers' output skips plugins, so this sets the content type
    and returns the bytes itself."""
    request = bottle.request
    status = error.status_code
    if status == 404:
        message = (f"no such endpoint: {request.method[:20]} {request.path[:200]}; the endpoints "
                   f"are " + ", ".join(f"{method} {path}" for method, path in ENDPOINTS))
    elif status == 405:
        allowed = error.headers.get("Allow") or ""
        message = (f"{request.path[:200]} does not take {request.method[:20]}; use "
                   f"{allowed or 'another method'}")
    elif status >= 500:
        if error.exception is not None:
            log.error("HTTP edge: %s %s failed:\n%s", request.method, request.path,
                      error.traceback or error.exception)
        message = INTERNAL_ERROR
    else:
        message = error.body if isinstance(error.body, str) and error.body else error.status_line
    bottle.response.content_type = JSON_TYPE
    return json_bytes({"error": message})
