"""The HTTP edge over real HTTP (its WSGI server on loopback), in front of a thread node."""
import base64
import json
import os
import random
import re
import signal
import subprocess
import sys
import threading
import time

import pytest

from yaddb import Client, Item, key_for
from yaddb.errors import BadRequest, NotMaster, Unavailable
from yaddb.http_edge.app import default_max_body_bytes, item_json, make_app
from yaddb.http_edge.server import EdgeServer
from tests.helpers import child_env, free_port, wait_for
from tests.http_edge.conftest import MAX_VALUE, Edge

ITEM = {"content_type": "text/plain", "encoding": "utf-8"}


def put(edge, doc, content_type="application/json"):
    return edge.call("PUT", "/set", json.dumps(doc) if isinstance(doc, dict) else doc, content_type)


def query(edge, body, content_type="text/plain"):
    return edge.call("POST", "/query", body, content_type)


# --- ping, set, query, delete ------------------------------------------------------------------

def test_ping(edge):
    reply = edge.call("GET", "/ping")
    assert reply.status == 200 and reply.body == b"PONG"
    assert reply.content_type.startswith("text/plain")


def test_set_then_query_as_hex_and_as_raw_bytes(edge, node):
    key = bytes(range(16))
    reply = put(edge, {"key": key.hex().upper(), **ITEM, "value": "héllo wörld"})
    assert reply.status == 200
    assert reply.json() == {key.hex(): {**ITEM, "value": "héllo wörld"}}
    expected = {key.hex(): {**ITEM, "value": "héllo wörld"}}
    assert query(edge, key.hex()).json() == expected
    assert query(edge, f"  {key.hex().upper()}\n").json() == expected   # case and whitespace
    assert query(edge, key, "application/octet-stream").json() == expected
    assert query(edge, key, "application/octet-stream; charset=binary").json() == expected
    assert node.client().get(key) == Item("text/plain", "utf-8", "héllo wörld".encode())


def test_set_without_key_uses_key_for_value(edge):
    reply = put(edge, {**ITEM, "value": "no key given"})
    key = key_for("no key given").hex()
    assert reply.status == 200 and reply.json() == {key: {**ITEM, "value": "no key given"}}
    assert query(edge, key).status == 200


def test_labels_and_empty_values_are_stored_as_given(edge, node):
    doc = {"key": "0a", "content_type": "application/x-ünïcode; q=1", "encoding": "gzip", "value": ""}
    assert put(edge, doc).status == 200
    assert query(edge, "0a").json() == {"0a": {k: doc[k] for k in ("content_type", "encoding", "value")}}
    assert node.client().get(b"\n") == Item("application/x-ünïcode; q=1", "gzip", b"")


def test_empty_labels_are_stored_as_given(edge):
    doc = {"key": "0c", "content_type": "", "encoding": "", "value": "v"}
    assert put(edge, doc).json() == {"0c": {"content_type": "", "encoding": "", "value": "v"}}
    assert query(edge, "0c").json() == {"0c": {"content_type": "", "encoding": "", "value": "v"}}


def test_delete(edge):
    put(edge, {"key": "dead01", **ITEM, "value": "x"})
    reply = edge.call("DELETE", "/delete", "dead01", "text/plain")
    assert reply.status == 200 and reply.json() == {"deleted": "dead01"}
    assert "no such key: dead01" in query(edge, "dead01").error(404)
    assert "no such key: dead01" in edge.call("DELETE", "/delete", "dead01", "text/plain").error(404)
    put(edge, {"key": "dead02", **ITEM, "value": "x"})
    reply = edge.call("DELETE", "/delete", bytes.fromhex("dead02"), "application/octet-stream")
    assert reply.json() == {"deleted": "dead02"}


# --- native client <-> HTTP --------------------------------------------------------------------

def test_native_values_read_over_http(edge, node):
    client = node.client()
    key = client.set(None, "text set natively")
    assert query(edge, key.hex()).json() == {key.hex(): {**ITEM, "value": "text set natively"}}
    utf8_bytes = client.set(b"u8", "ok ✓".encode())
    assert query(edge, utf8_bytes.hex()).json()[utf8_bytes.hex()] == {
        "content_type": "application/octet-stream", "encoding": "binary", "value": "ok ✓"}


def test_non_utf8_value_is_base64_and_round_trips(edge, node):
    client = node.client()
    raw = b"\xff\x00\xfe binary \x80"
    key = client.set(b"bin", raw)
    item = query(edge, key.hex()).json()[key.hex()]
    assert item == {"content_type": "application/octet-stream", "encoding": "binary",
                    "value": base64.b64encode(raw).decode(), "value_encoding": "base64"}
    # Written back as read, under a new key: the native client gets the same bytes.
    reply = put(edge, {"key": "b2", **item})
    assert reply.status == 200 and reply.json() == {"b2": item}
    assert client.get(b"\xb2") == Item("application/octet-stream", "binary", raw)
    # Without a key, the key is key_for() of the bytes, not of the base64 text.
    doc = dict(item)
    assert put(edge, doc).json() == {key_for(raw).hex(): item}


def test_item_json_shapes():
    assert item_json("a", "b", b"text") == {"content_type": "a", "encoding": "b", "value": "text"}
    assert item_json("a", "b", b"\xc3") == {"content_type": "a", "encoding": "b", "value": "ww==",
                                           "value_encoding": "base64"}


# --- /set errors -------------------------------------------------------------------------------

@pytest.mark.parametrize("body, words", [
    ('{"key": "00", "value": ', "not valid JSON"),
    ("", "empty"),
    ("[1, 2]", "JSON object, not a JSON array"),
    ('"just a string"', "not a JSON string"),
    (b"\xff\xfe\x00garbage", "not valid JSON"),
    ("[" * 100_000 + "]" * 100_000, "JSON"),
    ('{"v": 1' + "0" * 5000 + "}", "not valid JSON"),
])
def test_set_bad_json(edge, body, words):
    assert words in put(edge, body).error(400)


@pytest.mark.parametrize("content_type", [None, "text/plain", "application/x-www-form-urlencoded"])
def test_set_needs_json_content_type(edge, content_type):
    reply = edge.call("PUT", "/set", json.dumps({**ITEM, "value": "v"}), content_type)
    assert "Content-Type: application/json" in reply.error(400)


@pytest.mark.parametrize("key, words", [
    ("xyz0", "not hex: 'x'"),
    ("abc", "odd number of digits"),
    ("", "empty"),
    ("ab cd", "not hex: ' '"),
    ("٣٣", "not hex"),               # non-ASCII digits
    ("00" * 1025, "at most 1024"),
])
def test_set_bad_hex_key(edge, key, words):
    assert words in put(edge, {"key": key, **ITEM, "value": "v"}).error(400)


def test_set_missing_fields_are_named(edge):
    message = put(edge, {"value": "v"}).error(400)
    assert "missing field(s): content_type, encoding" in message
    assert "value" in put(edge, {**ITEM}).error(400)


@pytest.mark.parametrize("field, value, kind", [
    ("value", 5, "number"), ("value", None, "null"), ("content_type", ["a"], "array"),
    ("encoding", {"a": 1}, "object"), ("key", 12, "number"), ("value", True, "boolean"),
])
def test_set_non_string_fields_are_named(edge, field, value, kind):
    doc = {**ITEM, "value": "v", field: value}
    assert f"{field} is a JSON {kind}" in put(edge, doc).error(400)


def test_set_other_bad_fields(edge):
    assert "unknown field(s) 'kye'" in put(edge, {"kye": "00", **ITEM, "value": "v"}).error(400)
    lone = '{"content_type": "a", "encoding": "b", "value": "\\ud800"}'
    assert "lone surrogate" in put(edge, lone).error(400)
    lone = '{"content_type": "\\udfff", "encoding": "b", "value": ""}'
    assert "lone surrogate" in put(edge, lone).error(400)
    assert "limit is 255" in put(edge, {**ITEM, "content_type": "é" * 128, "value": "v"}).error(400)
    assert "not valid base64" in put(edge, {**ITEM, "value": "!!", "value_encoding": "base64"}).error(400)
    assert "value_encoding" in put(edge, {**ITEM, "value": "v", "value_encoding": "hex"}).error(400)


def test_set_oversized_value_is_413_and_not_stored(edge, node):
    reply = put(edge, {"key": "0b", **ITEM, "value": "x" * (MAX_VALUE + 1)})
    assert f"the limit is {MAX_VALUE}" in reply.error(413)
    assert node.client().get(b"\x0b") is None
    reply = put(edge, {"key": "0b", **ITEM, "value": base64.b64encode(b"\xff" * (MAX_VALUE + 1)).decode(),
                       "value_encoding": "base64"})
    reply.error(413)
    assert put(edge, {"key": "0b", **ITEM, "value": "x" * MAX_VALUE}).status == 200


def test_oversized_body_is_413_json_before_the_body_is_read(edge):
    limit = default_max_body_bytes(MAX_VALUE)
    # The headers announce far more than the limit and no body follows: the reply must come
    # from Content-Length alone (and close the connection).
    started = time.monotonic()
    raw = edge.raw(b"PUT /set HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                   b"Content-Length: 999999999999\r\n\r\n")
    assert time.monotonic() - started < 4, "the server waited for the body"
    head, _, body = raw.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 413"), raw[:300]
    assert b"application/json" in head.lower()
    assert str(limit) in json.loads(body)["error"]


def test_the_app_itself_checks_content_length_first(node):
    """Under any WSGI server: a body over the limit is refused on Content-Length, unread."""
    app = make_app(lambda: node.client(), lambda: {}, MAX_VALUE)

    class Unreadable:
        def read(self, *args):
            raise AssertionError("the body was read")

    replies = []
    environ = {"REQUEST_METHOD": "PUT", "PATH_INFO": "/set", "CONTENT_TYPE": "application/json",
               "CONTENT_LENGTH": str(app.max_body_bytes + 1), "wsgi.input": Unreadable(),
               "wsgi.errors": None}
    body = b"".join(app(environ, lambda status, headers, exc_info=None: replies.append((status, headers))))
    assert replies[0][0].startswith("413") and ("Content-Type", "application/json") in replies[0][1]
    assert "the limit is" in json.loads(body)["error"]
    app.close()


def test_chunked_set_body(edge):
    doc = json.dumps({"key": "c0", **ITEM, "value": "chunked"}).encode()
    chunks = b"".join(b"%x\r\n%s\r\n" % (len(part), part) for part in (doc[:10], doc[10:])) + b"0\r\n\r\n"
    raw = edge.raw(b"PUT /set HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                   b"Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n" + chunks)
    assert raw.startswith(b"HTTP/1.1 200"), raw[:300]
    assert query(edge, "c0").json() == {"c0": {**ITEM, "value": "chunked"}}


# --- /query and /delete errors -----------------------------------------------------------------

@pytest.mark.parametrize("path, method", [("/query", "POST"), ("/delete", "DELETE")])
def test_key_errors(edge, path, method):
    call = lambda body, ctype: edge.call(method, path, body, ctype)
    assert "empty" in call(b"", "application/octet-stream").error(400)
    assert "empty" in call(b"", "text/plain").error(400)
    assert "empty" in call(b"  \n", "text/plain").error(400)
    assert "not hex" in call("zz", "text/plain").error(400)
    assert "odd number" in call("abc", "text/plain").error(400)
    assert "not ASCII" in call("ü".encode(), "text/plain").error(400)
    assert "at most 1024" in call(b"k" * 1025, "application/octet-stream").error(400)
    assert "at most 1024" in call("00" * 1025, "text/plain").error(400)
    message = call(b"ab", None).error(400)
    assert "application/octet-stream" in message and "text/plain" in message
    call(b"ab", "application/x-www-form-urlencoded").error(400)
    assert "at most 65536" in call(b"k" * (64 << 10 | 1), "application/octet-stream").error(413)


@pytest.mark.parametrize("path, method", [("/query", "POST"), ("/delete", "DELETE")])
def test_not_found_and_the_hex_hint(edge, path, method):
    hex_key = "0123456789abcdef0123456789abcdef"
    plain = edge.call(method, path, hex_key, "text/plain").error(404)
    assert plain == f"no such key: {hex_key}"
    hinted = edge.call(method, path, hex_key, "application/octet-stream").error(404)
    assert hinted.startswith(f"no such key: {hex_key.encode().hex()}")
    assert "look like hex" in hinted and "Content-Type: text/plain" in hinted
    raw = edge.call(method, path, b"\x01\x02not-hex", "application/octet-stream").error(404)
    assert raw == "no such key: " + b"\x01\x02not-hex".hex()


def test_a_raw_key_that_looks_like_hex_is_never_guessed(edge):
    put(edge, {"key": "beef", **ITEM, "value": "under 2 bytes"})
    # "beef" as 4 raw ASCII bytes is another key: 404 with the hint, not the item of 0xbeef.
    assert "look like hex" in query(edge, b"beef", "application/octet-stream").error(404)
    assert query(edge, "beef").status == 200


# --- routes, methods, internal errors ----------------------------------------------------------

def test_unknown_route_and_wrong_method_are_json(edge):
    message = edge.call("GET", "/nope").error(404)
    assert "no such endpoint: GET /nope" in message and "POST /query" in message
    assert "no such endpoint" in edge.call("POST", "/").error(404)
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


# --- /subscribe --------------------------------------------------------------------------------

@pytest.mark.parametrize("body, words", [
    ("not json", "not valid JSON"),
    ({"port": 7000}, "missing field(s): ip"),
    ({"ip": "127.0.0.1"}, "missing field(s): port"),
    ({"ip": 5, "port": 7000}, '"ip" must be a string'),
    ({"ip": "", "port": 7000}, "host name or address"),
    ({"ip": "127.0.0.1", "port": 0}, "port number"),
    ({"ip": "127.0.0.1", "port": 70000}, "port number"),
    ({"ip": "127.0.0.1", "port": "x"}, "port number"),
    ({"ip": "127.0.0.1", "port": True}, "port number"),
    ({"ip": "127.0.0.1", "port": 7000, "master": "nocolon"}, "host:port"),
    ({"ip": "127.0.0.1", "port": 7000, "master": 5}, "host:port"),
    ({"ip": "127.0.0.1", "port": 7000, "extra": 1}, "unknown field(s) 'extra'"),
])
def test_subscribe_bad_body(edge, body, words):
    reply = edge.call("POST", "/subscribe", body, "application/json")
    assert words in reply.error(400)


def test_subscribe_without_support_is_418(edge, status):
    reply = edge.call("POST", "/subscribe", {"ip": "127.0.0.1", "port": 7001}, "application/json")
    assert reply.error(418).startswith("I am not a master")
    master = status.doc["partitions"][0]["master"]
    reply = edge.call("POST", "/subscribe", {"ip": "127.0.0.1", "port": "7001", "master": master},
                      "application/json")
    assert reply.error(418).startswith("I am not a master")
    reply = edge.call("POST", "/subscribe", {"ip": "127.0.0.1", "port": 7001, "master": "127.0.0.1:9"},
                      "application/json")
    assert "127.0.0.1:9 is not the master of any partition" in reply.error(418)


def test_subscribe_with_a_subscriber(make_edge):
    calls = []

    def subscriber(ip, port, master):
        calls.append((ip, port, master))
        if port == 1:
            raise Unavailable("node 10.0.0.1:1 does not answer")
        if port == 2:
            raise NotMaster("that node is itself a slave")
        if port == 3:
            raise BadRequest("that node already replicates this master")

    status = lambda: {"partitions": [{"index": 0, "master": "127.0.0.1:7000", "slaves": []}]}
    edge = make_edge(make_app(lambda: None, status, subscriber=subscriber))
    sub = lambda doc: edge.call("POST", "/subscribe", doc, "application/json")
    reply = sub({"ip": "127.0.0.1", "port": 7001})
    assert reply.status == 200 and reply.body == b"Subscribed"
    assert sub({"ip": "127.0.0.1", "port": 7002, "master": "tcp://127.0.0.1:7000"}).status == 200
    assert calls == [("127.0.0.1", 7001, None), ("127.0.0.1", 7002, "127.0.0.1:7000")]
    assert "does not answer" in sub({"ip": "10.0.0.1", "port": 1}).error(503)
    assert sub({"ip": "127.0.0.1", "port": 2}).error(418).startswith("I am not a master")
    sub({"ip": "127.0.0.1", "port": 3}).error(400)


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


# --- threads and shutdown ----------------------------------------------------------------------

def test_one_client_per_thread_and_clean_stop(make_edge, node):
    made = []

    def factory():
        client = node.client(timeout=5.0)
        made.append((threading.get_ident(), client))
        return client

    edge = make_edge(make_app(factory, lambda: {}), threads=4)
    put(edge, {"key": "7e", **ITEM, "value": "v"})
    errors = []

    def hammer():
        try:
            for _ in range(20):
                assert query(edge, "7e").status == 200
        except Exception as exc:  # reported below
            errors.append(exc)

    workers = [threading.Thread(target=hammer) for _ in range(8)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(30)
    assert not errors
    threads = [ident for ident, _ in made]
    assert 1 <= len(made) <= 4 and len(set(threads)) == len(threads)
    stopper = threading.Thread(target=edge.stop)
    stopper.start()
    stopper.join(15)
    assert not stopper.is_alive()
    assert all(client._conn._sock is None for _, client in made)
    with pytest.raises(OSError):
        edge.call("GET", "/ping")


def test_sigterm_handler_stops_a_background_server(node):
    """The router's pattern: the edge serves in a background thread, the main thread's SIGTERM
    handler stops it."""
    app = make_app(lambda: node.client(timeout=5.0), lambda: {})
    server = EdgeServer(app, "127.0.0.1", 0, threads=2).start()
    edge = Edge.__new__(Edge)
    edge.port = server.port
    assert edge.call("GET", "/ping").status == 200 and query(edge, "00").status == 404
    previous = {signum: signal.getsignal(signum) for signum in (signal.SIGINT, signal.SIGTERM)}
    stopped = []
    try:
        server.install_signal_handlers(then=lambda: stopped.append(True))
        os.kill(os.getpid(), signal.SIGTERM)
        wait_for(lambda: stopped, "the SIGTERM handler", timeout=15)
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    assert not server._thread.is_alive()
    assert len(app.clients) == 0
    with pytest.raises(OSError):
        edge.call("GET", "/ping")


def test_standalone_edge_process_stops_on_sigterm(tmp_path):
    port = free_port()
    log_path = tmp_path / "edge.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "yaddb.http_edge.server", "--backend",
             f"tcp://127.0.0.1:{free_port()}", "-p", str(port), "--timeout", "0.3"],
            stdout=log, stderr=subprocess.STDOUT, env=child_env(), cwd=str(tmp_path),
            start_new_session=True)
    try:
        edge = Edge.__new__(Edge)
        edge.port = port

        def answers():
            assert proc.poll() is None, log_path.read_text()
            try:
                return edge.call("GET", "/ping").status == 200
            except OSError:
                return False
        wait_for(answers, "the edge process to answer", timeout=20)
        assert "did not answer" in query(edge, "00").error(503)
        assert edge.call("GET", "/stats").json()["partitions"][0]["alive"] is False
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=15) == 0, log_path.read_text()
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=15)


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
