"""What /set refuses, with which status and words: bad JSON, bad fields, bad keys, values and
bodies over the limits (413, nothing stored)."""
import base64
import json
import time

import pytest

from yaddb.errors import BadRequest, ValueTooLarge
from yaddb.http_edge.app import default_max_body_bytes, make_app
from yaddb.item import encode_item, key_for
from tests.http_edge.conftest import ITEM, MAX_VALUE, put, query


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


@pytest.mark.parametrize("w, words", [
    ("0", "w must be"), ("some", "w must be"),
    # not UTF-8: was taken as no ?w= at all, so the write went on with the default w=1
    ("%ff", "not UTF-8"),
    # digits of another script: int() reads them, but a concern is ASCII digits
    ("%D9%A1", "w must be"),
    # given twice: Bottle took the last one, so this was a w=1 write acknowledged as such
    ("all&w=1", "more than once"),
])
def test_a_bad_write_concern_is_400_and_nothing_is_stored(edge, w, words):
    value = f"written with ?w={w}"
    reply = edge.call("PUT", f"/set?w={w}", json.dumps({**ITEM, "value": value}), "application/json")
    assert words in reply.error(400)
    assert query(edge, key_for(value.encode()).hex()).status == 404


def test_set_oversized_value_is_413_and_not_stored(edge, node):
    reply = put(edge, {"key": "0b", **ITEM, "value": "x" * (MAX_VALUE + 1)})
    assert f"the limit is {MAX_VALUE}" in reply.error(413)
    assert node.client().get(b"\x0b") is None
    reply = put(edge, {"key": "0b", **ITEM, "value": base64.b64encode(b"\xff" * (MAX_VALUE + 1)).decode(),
                       "value_encoding": "base64"})
    reply.error(413)
    assert put(edge, {"key": "0b", **ITEM, "value": "x" * MAX_VALUE}).status == 200


@pytest.mark.parametrize("doc, error", [
    ({"key": "0d", **ITEM, "encoding": "x" * 256, "value": "v"}, BadRequest),
    ({"key": "0d", **ITEM, "content_type": "é" * 128, "value": "v"}, BadRequest),
    ({"key": "0d", **ITEM, "value": "x" * (MAX_VALUE + 1)}, ValueTooLarge),
])
def test_set_leaves_labels_and_sizes_to_the_item_code(edge, node, doc, error):
    """The edge's answer is encode_item's, with the edge's limit, and nothing is stored."""
    with pytest.raises(error) as raised:
        encode_item(doc["content_type"], doc["encoding"], doc["value"].encode(), MAX_VALUE)
    assert str(raised.value) in put(edge, doc).error(error.http_status)
    assert node.client().get(b"\x0d") is None


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
    assert [key[:3] for key in app.counts.snapshot()] == [("/set", "PUT", 413)]
    app.close()


def test_chunked_set_body(edge):
    doc = json.dumps({"key": "c0", **ITEM, "value": "chunked"}).encode()
    chunks = b"".join(b"%x\r\n%s\r\n" % (len(part), part) for part in (doc[:10], doc[10:])) + b"0\r\n\r\n"
    raw = edge.raw(b"PUT /set HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                   b"Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n" + chunks)
    assert raw.startswith(b"HTTP/1.1 200"), raw[:300]
    assert query(edge, "c0").json() == {"c0": {**ITEM, "value": "chunked"}}
