"""/ping, /set, /query and /delete over real HTTP (the edge under waitress on loopback, in front
of a thread node), and items moving between the native client and HTTP."""
import base64

from yaddb import Item, key_for
from yaddb.http_edge.app import item_json
from tests.http_edge.conftest import ITEM, put, query


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
