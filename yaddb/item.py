"""A stored item (content type, encoding, value) and its byte form: pure functions, no I/O.

The node stores the byte form as the engine's value and never looks inside beyond checking it,
so a set costs the node no re-encoding:

    u8 len(content_type) | content_type (UTF-8) | u8 len(encoding) | encoding (UTF-8) | value
"""
from __future__ import annotations

from typing import NamedTuple, Union

import mmh3

from yaddb.errors import BadRequest, ValueTooLarge
from yaddb.limits import DEFAULT_MAX_VALUE_BYTES, MAX_LABEL_BYTES

__all__ = ["Item", "key_for", "check_blob", "encode_item", "decode_item"]


class Item(NamedTuple):
    content_type: str
    encoding: str
    value: bytes


def key_for(data: Union[bytes, str]) -> bytes:
    """The seed's key for some data: its 16-byte MurmurHash3 (x64, 128-bit, seed 0)."""
    if isinstance(data, str):
        data = data.encode("utf-8")
    return mmh3.hash_bytes(bytes(data))


def _label(text: object, what: str) -> bytes:
    if not isinstance(text, str):
        raise BadRequest(f"{what} must be a string, not {type(text).__name__}")
    try:
        raw = text.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate, which JSON can spell as \ud800
        raise BadRequest(f'"{what}" is not valid Unicode: it holds a lone surrogate escape '
                         f"(\\ud800-\\udfff without its pair)") from None
    if len(raw) > MAX_LABEL_BYTES:
        raise BadRequest(f"{what} is {len(raw)} bytes in UTF-8; the limit is {MAX_LABEL_BYTES}")
    return raw


def encode_item(content_type: str, encoding: str, value: bytes,
                max_value_bytes: int = DEFAULT_MAX_VALUE_BYTES) -> bytes:
    if isinstance(value, (bytearray, memoryview)):
        value = bytes(value)
    if type(value) is not bytes:
        raise BadRequest(f"a value must be bytes, not {type(value).__name__}")
    if len(value) > max_value_bytes:
        raise ValueTooLarge(f"the value is {len(value)} bytes; the limit is {max_value_bytes}")
    ct = _label(content_type, "content_type")
    enc = _label(encoding, "encoding")
    return bytes((len(ct),)) + ct + bytes((len(enc),)) + enc + value


def check_blob(blob: object, max_value_bytes: int = DEFAULT_MAX_VALUE_BYTES) -> bytes:
    """The blob if it is a well-formed item within the limit; raises BadRequest otherwise."""
    if type(blob) is not bytes:
        raise BadRequest(f"an item must be bytes, not {type(blob).__name__}")
    try:
        ct_end = 1 + blob[0]
        enc_end = ct_end + 1 + blob[ct_end]
        blob[1:ct_end].decode("utf-8")
        blob[ct_end + 1:enc_end].decode("utf-8")
    except (IndexError, UnicodeDecodeError):
        raise BadRequest("the item is not content_type, encoding and value in YADDB's form") from None
    if enc_end > len(blob):
        raise BadRequest("the item is cut short")
    if len(blob) - enc_end > max_value_bytes:
        raise ValueTooLarge(f"the value is {len(blob) - enc_end} bytes; the limit is {max_value_bytes}")
    return blob


def decode_item(blob: bytes) -> Item:
    """The Item in a blob that check_blob accepted (the node stores only such blobs)."""
    ct_end = 1 + blob[0]
    enc_end = ct_end + 1 + blob[ct_end]
    return Item(blob[1:ct_end].decode("utf-8"), blob[ct_end + 1:enc_end].decode("utf-8"),
                blob[enc_end:])
