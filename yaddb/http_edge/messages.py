"""HTTP requests taken apart and JSON replies put together for the edge: no routing here."""
from __future__ import annotations

import base64
import binascii
import json
import re
from typing import Any, Optional

import bottle

from yaddb.errors import InvalidKey
from yaddb.limits import MAX_KEY_BYTES, check_key
from yaddb.placement import BadAddress, parse_address


SMALL_BODY_BYTES = 64 << 10      # /query, /delete, /subscribe: a key or a small JSON object
JSON_TYPE = "application/json"
TEXT_TYPE = "text/plain; charset=utf-8"
HTML_TYPE = "text/html; charset=utf-8"
ENDPOINTS = (("GET", "/ping"), ("PUT", "/set"), ("POST", "/query"), ("DELETE", "/delete"),
             ("POST", "/subscribe"), ("GET", "/stats"), ("GET", "/metrics"), ("GET", "/"),
             ("GET", "/openapi.json"))
SET_FIELDS = ("key", "content_type", "encoding", "value", "value_encoding")
_HEX = re.compile(r"[0-9a-fA-F]+")
_STATUS_TEXT = {code: text for code, text in bottle.HTTP_CODES.items()}
_STATUS_TEXT[418] = "I'm a teapot"


def default_max_body_bytes(max_value_bytes: int) -> int:
    return 3 * max_value_bytes + (64 << 10)


def item_json(content_type: str, encoding: str, value: bytes) -> dict:
    """An item as it appears in HTTP JSON (see the module docstring)."""
    try:
        return {"content_type": content_type, "encoding": encoding, "value": value.decode("utf-8")}
    except UnicodeDecodeError:
        return {"content_type": content_type, "encoding": encoding,
                "value": base64.b64encode(value).decode("ascii"), "value_encoding": "base64"}


class Reply(bottle.HTTPResponse):
    """A finished reply; raised from anywhere in a handler. Not an HTTPError, so Bottle sends
    it as it is rather than through an error handler."""


def json_bytes(payload: Any) -> bytes:
    return json.dumps(payload, ensure_ascii=False, separators=(",", ":"),
                      default=json_default).encode("utf-8", "replace")


def json_default(obj: Any) -> Any:
    if isinstance(obj, (bytes, bytearray, memoryview)):
        return bytes(obj).hex()
    if isinstance(obj, (set, frozenset, tuple)):
        return list(obj)
    return str(obj)


def http_reply(status: int, body: bytes, content_type: str) -> Reply:
    return Reply(body=body, status=status,
                  headers={"Content-Type": content_type, "Content-Length": str(len(body))})


def ok_json(payload: Any) -> Reply:
    return http_reply(200, json_bytes(payload), JSON_TYPE)


def error_reply(status: int, message: str) -> Reply:
    return http_reply(status, json_bytes({"error": message}), JSON_TYPE)


def status_line(status: int) -> str:
    return f"{status} {_STATUS_TEXT.get(status, 'Unknown')}"


# ---------------------------------------------------------------------------------------------
# Request bodies and keys
# ---------------------------------------------------------------------------------------------

def media_type(environ: dict) -> str:
    return environ.get("CONTENT_TYPE", "").split(";", 1)[0].strip().lower()


def content_length(environ: dict) -> Optional[int]:
    """The declared Content-Length, None when there is none; 400 when it is not a number."""
    raw = environ.get("CONTENT_LENGTH", "")
    if raw in ("", None):
        return None
    try:
        length = int(raw)
    except ValueError:
        raise error_reply(400, f"Content-Length {raw[:40]!r} is not a number") from None
    if length < 0:
        raise error_reply(400, "Content-Length is negative")
    return length


def too_large(length: int, limit: int) -> Reply:
    return error_reply(413, f"the request body is {length} bytes; this endpoint takes at most {limit}")


def read_body(environ: dict, limit: int) -> bytes:
    """The request body, at most `limit` bytes (413 beyond it, checked on Content-Length
    before anything is read, and on the bytes read when the body is chunked)."""
    length = content_length(environ)
    stream = environ["wsgi.input"]
    if length is not None:
        if length > limit:
            raise too_large(length, limit)
        if length == 0:
            return b""
        data = stream.read(length)
        if len(data) < length:  # a server may hand it over in pieces
            parts = [data]
            got = len(data)
            while got < length:
                chunk = stream.read(length - got)
                if not chunk:
                    raise error_reply(400, f"the body ended after {got} of its {length} bytes")
                parts.append(chunk)
                got += len(chunk)
            data = b"".join(parts)
        return data
    if "chunked" not in environ.get("HTTP_TRANSFER_ENCODING", "").lower():
        return b""
    parts, got = [], 0
    while True:  # bounded: stops at end of body or one byte past the limit
        chunk = stream.read(min(64 << 10, limit + 1 - got))
        if not chunk:
            return b"".join(parts)
        parts.append(chunk)
        got += len(chunk)
        if got > limit:
            raise error_reply(413, f"the request body is over {limit} bytes, this endpoint's limit")


def hex_key(text: str, what: str = "the key") -> bytes:
    text = text.strip()
    if not text:
        raise error_reply(400, f"{what} is empty; a key is 1 to {MAX_KEY_BYTES} bytes, sent as hex")
    if not _HEX.fullmatch(text):
        bad = next((ch for ch in text if ch not in "0123456789abcdefABCDEF"), "")
        raise error_reply(400, f"{what} is not hex: {bad!r} is not a hex digit (0-9, a-f)")
    if len(text) % 2:
        raise error_reply(400, f"{what} is not hex: it has an odd number of digits ({len(text)})")
    return check_key_length(bytes.fromhex(text))


def check_key_length(key: bytes) -> bytes:
    """The key, or a 400 reply saying what the key rule (yaddb.limits) refuses in it."""
    try:
        return check_key(key)
    except InvalidKey as exc:
        raise error_reply(400, str(exc)) from None


def looks_like_hex(raw: bytes) -> bool:
    text = raw.strip()
    return len(text) >= 2 and len(text) % 2 == 0 and all(c in b"0123456789abcdefABCDEF" for c in text)


def key_from_body(environ: dict) -> tuple[bytes, bool]:
    """(key, sent raw) from a /query or /delete body."""
    media = media_type(environ)
    if not media:  # no Content-Type at all, as the seed's own client sends (CONTRACT.md 4)
        body = read_body(environ, SMALL_BODY_BYTES)
        if looks_like_hex(body):
            return hex_key(body.decode("ascii")), False
        return check_key_length(body), True
    if media not in ("application/octet-stream", "text/plain"):
        shown = environ.get("CONTENT_TYPE") or "none"
        raise error_reply(400, f"send the key as the body with Content-Type application/octet-stream "
                          f"(raw bytes) or text/plain (hex); this request's Content-Type is {shown}")
    body = read_body(environ, SMALL_BODY_BYTES)
    if media == "application/octet-stream":
        return check_key_length(body), True
    try:
        text = body.decode("ascii")
    except UnicodeDecodeError:
        raise error_reply(400, "a text/plain key must be hex digits (0-9, a-f); this body is not ASCII") from None
    return hex_key(text), False


def not_found(key: bytes, raw: bool) -> Reply:
    message = f"no such key: {key.hex()}"
    if raw and looks_like_hex(key):
        message += (f". The key was taken as {len(key)} raw bytes (Content-Type "
                    f"application/octet-stream), but they look like hex: to look up the key "
                    f"those hex digits spell, send them with Content-Type: text/plain")
    return error_reply(404, message)


def json_object(environ: dict, limit: int) -> dict:
    media = media_type(environ)
    if media != "application/json":
        shown = environ.get("CONTENT_TYPE") or "none"
        raise error_reply(400, f"send a JSON object with Content-Type: application/json; this "
                          f"request's Content-Type is {shown}")
    body = read_body(environ, limit)
    if not body.strip():
        raise error_reply(400, "the body is empty; it must be a JSON object")
    try:
        doc = json.loads(body)
    except UnicodeDecodeError:
        raise error_reply(400, "the body is not valid JSON: it is not UTF-8 text") from None
    except ValueError as exc:  # JSONDecodeError, and numbers too long to convert
        raise error_reply(400, f"the body is not valid JSON: {exc}") from None
    except RecursionError:
        raise error_reply(400, "the body is not valid JSON we accept: it is nested too deeply") from None
    if not isinstance(doc, dict):
        raise error_reply(400, f"the body must be a JSON object, not a JSON {json_kind(doc)}")
    return doc


def json_kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


def utf8(text: str, field: str) -> bytes:
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:
        raise error_reply(400, f'"{field}" is not valid Unicode: it holds a lone surrogate escape '
                          f"(\\ud800-\\udfff without its pair)") from None


# ---------------------------------------------------------------------------------------------
# The JSON bodies of /set and /subscribe: presence and JSON types only
# ---------------------------------------------------------------------------------------------

def set_fields(doc: dict) -> dict:
    """doc, once every /set field it has is known and a string and the three an item needs
    are there. Labels and sizes are the item code's to judge (encode_item)."""
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
    return doc


def value_bytes(doc: dict) -> bytes:
    """The bytes a /set stores: "value" as UTF-8, or base64-decoded per "value_encoding"."""
    value_encoding = doc.get("value_encoding", "utf-8").lower()
    if value_encoding in ("utf-8", "utf8"):
        return utf8(doc["value"], "value")
    if value_encoding == "base64":
        try:
            return base64.b64decode(doc["value"], validate=True)
        except (binascii.Error, ValueError):
            raise error_reply(400, '"value" is not valid base64, as "value_encoding" says') from None
    raise error_reply(400, f'"value_encoding" must be "utf-8" (the default) or "base64", '
                      f"not {doc['value_encoding']!r}")


def subscribe_fields(doc: dict) -> tuple[str, int, Optional[str]]:
    unknown = sorted(set(doc) - {"ip", "port", "master"})
    if unknown:
        raise error_reply(400, f"unknown field(s) {', '.join(map(repr, unknown))}; send "
                          f'{{"ip": "...", "port": ...}} and optionally "master": "host:port"')
    missing = [f for f in ("ip", "port") if f not in doc]
    if missing:
        raise error_reply(400, f"missing field(s): {', '.join(missing)}; send "
                          f'{{"ip": "...", "port": ...}} of the node to subscribe')
    ip = doc["ip"]
    if not isinstance(ip, str):
        raise error_reply(400, f'"ip" must be a string, not a JSON {json_kind(ip)}')
    # isprintable: no control characters and no lone surrogate (JSON's "\ud800"), which the
    # node's address could not be encoded with (found fuzzing the edge, issue 12)
    if not ip.strip() or len(ip) > 253 or any(ch.isspace() for ch in ip) or not ip.isprintable():
        raise error_reply(400, f'"ip" must be a host name or address, not {ip[:80]!r}')
    port = port_number(doc["port"], '"port"')
    master = doc.get("master")
    if master is not None:
        if not isinstance(master, str):
            raise error_reply(400, f'"master" must be a "host:port" string, not a JSON {json_kind(master)}')
        if not master.isprintable():
            raise error_reply(400, f'"master" must be a "host:port" string, not {master[:80]!r}')
        try:
            host, master_port = parse_address(master)
        except BadAddress as exc:
            raise error_reply(400, f'"master": {exc}') from None
        master = f"{host}:{master_port}"
    return ip, port, master


def port_number(value: Any, what: str) -> int:
    if isinstance(value, str) and value.strip().isdigit() and value.strip().isascii():
        value = int(value.strip())
    if isinstance(value, bool) or not isinstance(value, int):
        raise error_reply(400, f"{what} must be a port number (1-65535), not {json.dumps(value)[:40]}")
    if not 1 <= value <= 65535:
        raise error_reply(400, f"{what} must be a port number (1-65535), not {value}")
    return value
