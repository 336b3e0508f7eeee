"""The stored item's byte form and the key rule: pure functions, no I/O."""
import pytest

from yaddb.errors import BadRequest, InvalidKey, ValueTooLarge
from yaddb.item import Item, check_blob, decode_item, encode_item
from yaddb.limits import MAX_KEY_BYTES, MAX_LABEL_BYTES, check_key


def test_item_round_trips():
    blob = encode_item("text/plain", "utf-8", b"hello")
    assert check_blob(blob) is blob
    assert decode_item(blob) == Item("text/plain", "utf-8", b"hello")


@pytest.mark.parametrize("label", ["\ud800", "x" * (MAX_LABEL_BYTES + 1), 7])
def test_bad_labels_are_bad_requests(label):
    with pytest.raises(BadRequest):
        encode_item(label, "utf-8", b"v")
    with pytest.raises(BadRequest):
        encode_item("text/plain", label, b"v")


def test_value_limit_is_the_callers():
    assert decode_item(encode_item("a", "b", b"v" * 10, max_value_bytes=10)).value == b"v" * 10
    with pytest.raises(ValueTooLarge):
        encode_item("a", "b", b"v" * 11, max_value_bytes=10)


@pytest.mark.parametrize("key", [b"", b"k" * (MAX_KEY_BYTES + 1), "text", None])
def test_key_rule(key):
    with pytest.raises(InvalidKey):
        check_key(key)
    assert check_key(bytearray(b"k")) == b"k"
