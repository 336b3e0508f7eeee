"""Keys in /query and /delete bodies: what is refused (400, 413), what is not found (404), and
the hint when a raw key looks like hex."""
import pytest

from tests.http_edge.conftest import ITEM, put, query


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
    assert "empty" in call(b"", None).error(400)
    message = call(b"ab", "application/x-www-form-urlencoded").error(400)
    assert "application/octet-stream" in message and "text/plain" in message
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


@pytest.mark.parametrize("path, method", [("/query", "POST"), ("/delete", "DELETE")])
def test_with_no_content_type_hex_digits_are_a_hex_key_and_anything_else_raw(edge, path, method):
    """The seed's own Python client posts the key's hex with no Content-Type (contract 4)."""
    for body, key in ((b"beef", b"\xbe\xef"), (b" beef\n", b"\xbe\xef"), (b"k!", b"k!"),
                      (b"abc", b"abc")):  # odd digits are no hex: raw bytes
        put(edge, {"key": key.hex(), **ITEM, "value": "v"})
        reply = edge.call(method, path, body, None)
        assert reply.status == 200, (body, reply.body)
        assert reply.json() == ({"deleted": key.hex()} if method == "DELETE"
                                else {key.hex(): {**ITEM, "value": "v"}})
    edge.call("DELETE", "/delete", "beef", "text/plain")
    assert edge.call(method, path, b"beef", None).error(404) == "no such key: beef"
    assert "no such key: 0102" in edge.call(method, path, b"\x01\x02", None).error(404)
