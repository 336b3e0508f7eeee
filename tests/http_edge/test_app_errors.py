"""Errors that are not one endpoint's: unknown routes and methods, broken HTTP, internal
failures (JSON 500), the database gone (503), and random garbage (never a 500, always JSON)."""
import json
import random
import time

import pytest

from yaddb import Client
from yaddb.errors import (BadMessage, BadRequest, CorruptionError, DataDirLocked, InvalidKey,
                          NotMaster, StorageError, Unavailable, ValueTooLarge, YaddbError,
                          YaddbTimeout)
from yaddb.http_edge.app import make_app
from yaddb.http_edge.statuses import STATUS_BY_ERROR, database_error, error_status
from tests.helpers import free_port
from tests.http_edge.conftest import ITEM, put, query


# --- routes, methods, internal errors ----------------------------------------------------------

def test_unknown_route_and_wrong_method_are_json(edge):
    message = edge.call("GET", "/nope").error(404)
    assert "no such endpoint: GET /nope" in message and "POST /query" in message
    assert "no such endpoint" in edge.call("POST", "/nowhere").error(404)
    assert "/ does not take POST" in edge.call("POST", "/").error(405)
    reply = edge.call("GET", "/query")
    assert "/query does not take GET" in reply.error(405) and "POST" in reply.headers["allow"]
    edge.call("POST", "/ping").error(405)
    edge.call("DELETE", "/set").error(405)
    edge.call("PATCH", "/stats").error(405)
    assert edge.call("HEAD", "/ping").status == 200


def test_broken_http_gets_a_json_error(edge):
    raw = edge.raw(b"THIS IS NOT HTTP\r\n\r\n")
    head, _, body = raw.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.0 400") or head.startswith(b"HTTP/1.1 400"), raw[:200]
    assert "error" in json.loads(body)


def test_an_internal_failure_is_a_json_500(make_edge):
    def broken_factory():
        raise RuntimeError("boom")
    edge = make_edge(make_app(broken_factory, lambda: {}))
    message = query(edge, "00").error(500)
    assert "internal error" in message and "boom" not in message


# --- the backend gone: 503 ---------------------------------------------------------------------

def test_dead_backend_gives_503(make_edge, node):
    dead = f"tcp://127.0.0.1:{free_port()}"
    edge = make_edge(make_app(lambda: Client(dead, timeout=0.3, context=node.context), lambda: {}),
                     threads=2)
    started = time.monotonic()
    assert "did not answer" in put(edge, {"key": "00", **ITEM, "value": "v"}).error(503)
    assert "did not answer" in query(edge, "00").error(503)
    assert "did not answer" in edge.call("DELETE", "/delete", "00", "text/plain").error(503)
    assert time.monotonic() - started < 5


def test_not_master_on_write_is_503(make_edge):
    class Slave:
        def set(self, *args, **kwargs):
            raise NotMaster("this node is a slave")
        def close(self):
            pass
    edge = make_edge(make_app(Slave, lambda: {}))
    assert "no master" in put(edge, {**ITEM, "value": "v"}).error(503)


# --- garbage -----------------------------------------------------------------------------------

def test_garbage_never_gets_a_500_or_a_non_json_error(edge):
    rng = random.Random(1234)
    calls = [("PUT", "/set"), ("POST", "/query"), ("DELETE", "/delete"), ("POST", "/subscribe")]
    types = [None, "application/json", "text/plain", "application/octet-stream",
             "text/plain; charset=latin-1", "application/json; charset=utf-16",
             "multipart/form-data; boundary=x"]
    samples = [b"", b"{}", b"null", b'{"key": "00"}', b'{"ip": "h", "port": 1e400}',
               b'{"content_type": "a", "encoding": "b", "value": "c", "key": "0g"}',
               '{"value": "\u00e9", "content_type": "\u2603", "encoding": "x"}'.encode("utf-16")]
    for _ in range(150):
        method, path = rng.choice(calls)
        body = rng.choice(samples) if rng.random() < 0.4 else rng.randbytes(rng.randrange(0, 80))
        reply = edge.call(method, path, body, rng.choice(types))
        assert reply.status in (200, 400, 404, 413, 418), (method, path, body, reply.status, reply.body)
        if reply.status != 200:
            reply.error(reply.status)


# --- the status table --------------------------------------------------------------------------

@pytest.mark.parametrize("exc, status, message", [
    (ValueTooLarge("the value is 9 bytes; the limit is 8"), 413,
     "the value is 9 bytes; the limit is 8; nothing was stored"),
    (BadRequest("content_type is 256 bytes"), 400, "content_type is 256 bytes"),
    (InvalidKey("a key must be bytes"), 400, "a key must be bytes"),
    (BadMessage("frames do not decode"), 400, "frames do not decode"),
    (NotMaster("this node is a slave"), 503,
     "the key's partition has no master that takes writes right now: this node is a slave"),
    (Unavailable("partition 1 is down"), 503, "the database did not answer: partition 1 is down"),
    (YaddbTimeout("no reply in 2 s"), 503, "the database did not answer: no reply in 2 s"),
    (StorageError("disk full"), 500, "the storage node failed: disk full"),
    (DataDirLocked("locked"), 500, "the storage node failed: locked"),
    (YaddbError("something else"), 500, "something else"),
])
def test_database_errors_map_through_the_table(exc, status, message):
    reply = database_error(exc)
    assert reply.status_code == status
    assert reply.headers["Content-Type"] == "application/json"
    assert json.loads(reply.body) == {"error": message}


def test_the_table_is_looked_up_along_the_mro():
    class NewKindOfTimeout(YaddbTimeout):
        pass

    assert error_status(NewKindOfTimeout("x")) == STATUS_BY_ERROR[Unavailable]
    corrupt = CorruptionError("seg-1.sst", 40, "bad checksum")
    assert error_status(corrupt) == STATUS_BY_ERROR[StorageError]
    assert "corrupt data in seg-1.sst at byte 40" in json.loads(database_error(corrupt).body)["error"]
    with pytest.raises(TypeError):
        error_status(ValueError("not ours"))


def test_the_table_agrees_with_the_errors_own_statuses():
    """Only NotMaster differs on purpose (503 on writes; 418 is /subscribe's own answer)."""
    for cls, entry in STATUS_BY_ERROR.items():
        if cls is not NotMaster:
            assert entry.status == cls.http_status, cls
    assert STATUS_BY_ERROR[NotMaster].status == 503
