import msgpack
import pytest
from hypothesis import given, strategies as st

from yaddb.errors import (BadMessage, BadRequest, NotMaster, StorageError, Unavailable,
                          ValueTooLarge, YaddbError, YaddbTimeout)
from yaddb.transport.protocol import (MAX_BATCH, OPS, VERSION, Reply, decode_reply,
                                      decode_request, encode_error, encode_reply, encode_request)

keys = st.binary(min_size=1, max_size=64)
requests = st.one_of(
    st.tuples(st.just("ping"), st.just([])),
    st.tuples(st.just("stats"), st.just([])),
    st.tuples(st.just("get"), st.lists(keys, min_size=1, max_size=1)),
    st.tuples(st.just("del"), st.lists(keys, min_size=1, max_size=1)),
    st.tuples(st.just("set"), st.lists(st.binary(max_size=64), min_size=2, max_size=2)),
    st.tuples(st.sampled_from(["mget", "mdel"]), st.lists(st.lists(keys, max_size=20), min_size=1, max_size=1)),
    st.tuples(st.just("mset"), st.lists(st.lists(st.lists(keys, min_size=2, max_size=2), max_size=20),
                                        min_size=1, max_size=1)),
)


@given(st.integers(min_value=0, max_value=2**63 - 1), requests)
def test_every_request_round_trips(request_id, request):
    op, args = request
    decoded = decode_request(encode_request(request_id, op, args))
    assert (decoded.request_id, decoded.op, decoded.args) == (request_id, op, args)


@given(st.integers(min_value=0, max_value=2**31),
       st.recursive(st.none() | st.booleans() | st.integers(-2**63, 2**63 - 1) | st.binary() | st.text(),
                    lambda inner: st.lists(inner) | st.dictionaries(st.text(), inner), max_leaves=20))
def test_every_reply_round_trips(request_id, payload):
    reply = decode_reply(encode_reply(request_id, payload))
    assert reply == Reply(request_id, 0, payload)
    assert reply.result() == payload


@pytest.mark.parametrize("error", [BadRequest("b"), ValueTooLarge("v"), NotMaster("I am not a master"),
                                   Unavailable("u"), YaddbTimeout("t"), BadMessage("m"), StorageError("s")])
def test_errors_cross_the_wire_as_their_own_class(error):
    reply = decode_reply(encode_error(9, error))
    assert reply.request_id == 9
    with pytest.raises(type(error), match=str(error)) as raised:
        reply.result()
    assert type(raised.value) is type(error)


def test_a_bug_is_reported_as_an_internal_error_not_hidden():
    with pytest.raises(YaddbError, match="internal error: KeyError"):
        decode_reply(encode_error(1, KeyError("x"))).result()


@pytest.mark.parametrize("frame, complaint", [
    (b"", "not msgpack"),
    (b"\xc1", "not msgpack"),
    (msgpack.packb([VERSION, 1, "get"]), "array of 4"),
    (msgpack.packb({"op": "get"}), "array of 4"),
    (msgpack.packb([2, 1, "get", [b"k"]]), "protocol version 2"),
    (msgpack.packb([VERSION, "1", "get", [b"k"]]), "request id"),
    (msgpack.packb([VERSION, 1, "drop_table", []]), "unknown operation 'drop_table'"),
    (msgpack.packb([VERSION, 1, 7, []]), "unknown operation 7"),
    (msgpack.packb([VERSION, 1, "get", []]), "get takes 1 argument"),
    (msgpack.packb([VERSION, 1, "get", [u"text key"]]), "a key must be bytes"),
    (msgpack.packb([VERSION, 1, "set", [b"k", 5]]), "an item must be bytes"),
    (msgpack.packb([VERSION, 1, "mget", [[b"a", 1]]]), "every key must be bytes"),
    (msgpack.packb([VERSION, 1, "mset", [[[b"a"]]]]), "every entry must be"),
    (msgpack.packb([VERSION, 1, "mget", [[b"k"] * (MAX_BATCH + 1)]]), f"at most {MAX_BATCH}"),
    (msgpack.packb([VERSION, 1, "get", [msgpack.ExtType(5, b"x")]]), "a key must be bytes"),
])
def test_bad_requests_raise_bad_message_naming_the_fault(frame, complaint):
    with pytest.raises(BadMessage, match=complaint):
        decode_request(frame)


def test_bad_message_keeps_the_request_id_when_it_could_be_read():
    with pytest.raises(BadMessage) as raised:
        decode_request(msgpack.packb([VERSION, 77, "nope", []]))
    assert raised.value.request_id == 77
    with pytest.raises(BadMessage) as raised:
        decode_request(b"\xc1")
    assert raised.value.request_id is None


def test_a_tiny_frame_announcing_a_huge_array_is_refused_cheaply():
    # 0xdd = array32 with 2**32-1 elements announced, and nothing behind it.
    with pytest.raises(BadMessage):
        decode_request(b"\xdd\xff\xff\xff\xff")


@given(st.binary(max_size=200))
def test_garbage_only_ever_raises_bad_message(frame):
    try:
        request = decode_request(frame)
    except BadMessage:
        return
    assert request.op in OPS


@pytest.mark.parametrize("w,expected", [(2, 2), ("majority", "majority"), ("ALL", "all"),
                                        ("3", 3)])
def test_a_write_may_carry_its_write_concern(w, expected):
    request = decode_request(encode_request(7, "set", [b"k", b"\x00\x00v", w]))
    assert request.args == [b"k", b"\x00\x00v"] and request.w == expected
    assert decode_request(encode_request(7, "mdel", [[b"a"], w])).w == expected
    assert decode_request(encode_request(7, "set", [b"k", b"\x00\x00v"])).w == 1


@pytest.mark.parametrize("w", [0, "most", 2.5, None, [1]])
def test_a_bad_write_concern_is_a_bad_message(w):
    with pytest.raises(BadMessage, match="w must be") as raised:
        decode_request(encode_request(7, "set", [b"k", b"\x00\x00v", w]))
    assert raised.value.request_id == 7


def test_only_writes_take_a_write_concern():
    with pytest.raises(BadMessage, match="takes 1 argument"):
        decode_request(encode_request(7, "get", [b"k", "majority"]))
