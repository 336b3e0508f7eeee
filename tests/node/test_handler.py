"""NodeHandler on frames, with a real engine and no sockets."""
import pytest

from yaddb.errors import BadMessage, BadRequest, NotMaster, ValueTooLarge
from yaddb.item import decode_item, encode_item
from yaddb.limits import BLOB_OVERHEAD
from yaddb.lsm import Engine
from yaddb.node.handler import NodeHandler
from yaddb.transport.protocol import decode_reply, encode_request


@pytest.fixture
def handler(tmp_path):
    engine = Engine(str(tmp_path / "db"), compaction="manual", max_value_bytes=1000 + BLOB_OVERHEAD)
    yield NodeHandler(engine, "master", max_value_bytes=1000)
    engine.close()


def blob(value: bytes) -> bytes:
    return encode_item("text/plain", "utf-8", value)


def results(handler, *requests):
    frames = [encode_request(i, op, args) for i, (op, args) in enumerate(requests)]
    replies = [decode_reply(frame) for frame in handler.handle(frames)]
    assert [reply.request_id for reply in replies] == list(range(len(requests)))
    return replies


def test_a_round_applies_requests_in_order_and_reads_see_earlier_writes(handler):
    replies = results(handler,
                      ("get", [b"k"]), ("set", [b"k", blob(b"1")]), ("get", [b"k"]),
                      ("set", [b"k", blob(b"2")]), ("del", [b"k"]), ("get", [b"k"]),
                      ("del", [b"k"]), ("mset", [[[b"a", blob(b"A")], [b"b", blob(b"B")]]]),
                      ("mget", [[b"a", b"b", b"c"]]), ("mdel", [[b"a", b"c"]]), ("ping", []))
    values = [reply.result() for reply in replies]
    assert values[0] is None
    assert values[1] == 1 and decode_item(values[2]).value == b"1" and values[3] == 2
    assert values[4] is True and values[5] is None and values[6] is False
    assert values[7] == 6  # last sequence number of the two-entry batch (deletes are writes too)
    assert [decode_item(b).value if b else None for b in values[8]] == [b"A", b"B", None]
    assert values[9] == [True, False] and values[10] == "PONG"
    assert handler.engine.get(b"b") == blob(b"B") and handler.engine.get(b"a") is None


def test_one_bad_request_in_a_round_fails_alone(handler):
    frames = [encode_request(1, "set", [b"good", blob(b"x")]), b"\x93garbage",
              encode_request(3, "set", [b"", blob(b"x")]),
              encode_request(4, "set", [b"big", blob(b"x" * 1001)]),
              encode_request(5, "set", [b"odd", b"\xff not an item"]),
              encode_request(6, "get", [b"good"])]
    replies = [decode_reply(frame) for frame in handler.handle(frames)]
    assert replies[0].result() == 1
    for reply, error in zip(replies[1:5], (BadMessage, BadRequest, ValueTooLarge, BadRequest)):
        with pytest.raises(error):
            reply.result()
    assert decode_item(replies[5].result()).value == b"x"
    assert handler.counts["bad_message"] == 1 and handler.engine.sequence == 1


def test_a_slave_refuses_writes_with_the_seeds_message(tmp_path):
    engine = Engine(str(tmp_path / "db"), compaction="manual")
    try:
        handler = NodeHandler(engine, "slave")
        set_reply, get_reply = results(handler, ("set", [b"k", blob(b"v")]), ("get", [b"k"]))
        with pytest.raises(NotMaster, match="I am not a master"):
            set_reply.result()
        assert get_reply.result() is None and engine.sequence == 0
    finally:
        engine.close()


def test_stats_say_what_the_node_is(handler):
    results(handler, ("set", [b"k", blob(b"v")]), ("get", [b"k"]))
    (reply,) = results(handler, ("stats", []))
    stats = reply.result()
    assert stats["role"] == "master" and stats["sequence"] == 1
    assert stats["keys_estimate"] == 1 and "estimate" in stats["keys_estimate_note"]
    assert stats["ops"]["set"] == 1 and stats["ops"]["get"] == 1
    assert {"segments", "memtable_bytes", "uptime_s"} <= set(stats)
