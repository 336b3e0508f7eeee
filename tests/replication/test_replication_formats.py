"""Replication's formats, pure of sockets: published messages, the backlog, the state file."""
from __future__ import annotations

import msgpack
import pytest
from hypothesis import given, strategies as st

from yaddb.errors import BadMessage, CorruptionError
from yaddb.replication.backlog import Backlog
from yaddb.replication.messages import (Published, decode_published, encode_heartbeat,
                                        encode_log)
from yaddb.replication.state import (STATE_FILE, ReplicationState, decode_state, encode_state,
                                     load_state, save_state)

HISTORY = "0123456789abcdef"


# -- published messages ------------------------------------------------------------------------

def test_a_log_message_round_trips_with_its_deletes():
    entries = [(b"k1", b"v1"), (b"k2", None), (b"\x00\xff", b"")]
    message = decode_published(encode_log(HISTORY, 7, entries))
    assert message == Published(HISTORY, 7, [[b"k1", b"v1"], [b"k2", None], [b"\x00\xff", b""]])
    assert message.last_seq == 9 and not message.ack_wanted


def test_a_log_message_may_ask_slaves_to_confirm_at_once():
    message = decode_published(encode_log(HISTORY, 7, [(b"k", b"v")], ack_wanted=True))
    assert message == Published(HISTORY, 7, [[b"k", b"v"]], True) and message.ack_wanted


@pytest.mark.parametrize("seq", [0, 1, 12345, 2**63 - 1])
def test_a_heartbeat_round_trips_with_the_masters_sequence_as_its_last(seq):
    message = decode_published(encode_heartbeat(HISTORY, seq))
    assert message.history == HISTORY and message.entries == []
    assert message.last_seq == seq and message.first_seq == seq + 1


def pack(obj) -> bytes:
    return msgpack.packb(obj, use_bin_type=True)


GARBAGE = {
    "empty": b"",
    "reserved byte": b"\xc1",
    "truncated array": b"\x94\xa3log",
    "extra bytes": pack(["hb", HISTORY, 1]) + b"\x00",
    "ext type": b"\xd4\x01\x00",
    "map with a list key": b"\x81\x90\x00",
    "int": pack(5),
    "str": pack("log"),
    "bytes": pack(b"log"),
    "map": pack({"kind": "hb", "history": HISTORY, "seq": 1}),
    "empty list": pack([]),
    "kind only": pack(["hb"]),
    "no seq": pack(["hb", HISTORY]),
    "unknown kind": pack(["nope", HISTORY, 1]),
    "kind as bytes": pack([b"hb", HISTORY, 1]),
    "log without entries": pack(["log", HISTORY, 1]),
    "heartbeat with entries": pack(["hb", HISTORY, 1, []]),
    "log too long": pack(["log", HISTORY, 1, [], None]),
    "history not str": pack(["hb", 5, 1]),
    "history bytes": pack(["log", b"h", 1, []]),
    "seq str": pack(["hb", HISTORY, "1"]),
    "seq bool": pack(["hb", HISTORY, True]),
    "seq float": pack(["log", HISTORY, 1.0, []]),
    "seq nil": pack(["log", HISTORY, None, []]),
    "entries not a list": pack(["log", HISTORY, 1, b"k"]),
    "entry not a pair": pack(["log", HISTORY, 1, [[b"k"]]]),
    "entry a triple": pack(["log", HISTORY, 1, [[b"k", b"v", b"x"]]]),
    "entry bare key": pack(["log", HISTORY, 1, [b"k"]]),
    "key str": pack(["log", HISTORY, 1, [["k", b"v"]]]),
    "key nil": pack(["log", HISTORY, 1, [[None, b"v"]]]),
    "value int": pack(["log", HISTORY, 1, [[b"k", 5]]]),
    "value str": pack(["log", HISTORY, 1, [[b"k", "v"]]]),
    "one bad entry among good": pack(["log", HISTORY, 1, [[b"a", b"1"], [b"b", False]]]),
}


@pytest.mark.parametrize("frame", list(GARBAGE.values()), ids=list(GARBAGE))
def test_a_bad_published_message_raises_bad_message(frame):
    with pytest.raises(BadMessage):
        decode_published(frame)


@given(st.binary(max_size=64))
def test_random_bytes_decode_or_raise_bad_message_and_nothing_else(frame):
    try:
        message = decode_published(frame)
    except BadMessage:
        return
    assert isinstance(message, Published) and isinstance(message.history, str)


@given(st.recursive(st.none() | st.booleans() | st.integers(-2**63, 2**64 - 1) | st.binary(max_size=8)
                    | st.text(max_size=8) | st.sampled_from(["log", "hb", HISTORY]),
                    lambda inner: st.lists(inner, max_size=5), max_leaves=12))
def test_random_msgpack_values_decode_or_raise_bad_message_and_nothing_else(value):
    try:
        message = decode_published(pack(value))
    except BadMessage:
        return
    assert value[0] in ("log", "hb") and message.history == value[1]


# -- the backlog -------------------------------------------------------------------------------

def entry_bytes(entries) -> int:
    """What the backlog counts for these entries (key + value + 8 each)."""
    return sum(len(key) + len(value or b"") + 8 for key, value in entries)


def filled_backlog() -> Backlog:
    backlog = Backlog(max_bytes=10_000)
    backlog.append(1, [(b"k1", b"a"), (b"k2", b"b")])
    backlog.append(3, [(b"k3", b"c")])
    backlog.append(4, [(b"k4", None), (b"k5", b"e"), (b"k6", b"f")])
    return backlog


def test_since_gives_the_batches_after_applied():
    backlog = filled_backlog()
    assert backlog.oldest_seq == 1
    assert backlog.since(0, 1 << 20) == [(1, [(b"k1", b"a"), (b"k2", b"b")]), (3, [(b"k3", b"c")]),
                                        (4, [(b"k4", None), (b"k5", b"e"), (b"k6", b"f")])]
    assert backlog.since(2, 1 << 20) == [(3, [(b"k3", b"c")]),
                                        (4, [(b"k4", None), (b"k5", b"e"), (b"k6", b"f")])]
    assert backlog.since(6, 1 << 20) == []


def test_since_gives_the_tail_of_a_half_applied_batch():
    backlog = filled_backlog()
    assert backlog.since(1, 1 << 20) == [(2, [(b"k2", b"b")]), (3, [(b"k3", b"c")]),
                                        (4, [(b"k4", None), (b"k5", b"e"), (b"k6", b"f")])]
    assert backlog.since(4, 1 << 20) == [(5, [(b"k5", b"e"), (b"k6", b"f")])]
    assert backlog.since(5, 1 << 20) == [(6, [(b"k6", b"f")])]


def test_an_empty_backlog_cannot_serve_a_catch_up():
    assert Backlog(1000).since(0, 1 << 20) is None
    assert Backlog(1000).oldest_seq is None


def test_since_is_none_once_the_oldest_needed_write_was_dropped():
    value = b"x" * 30                               # 40 bytes an entry as the backlog counts
    backlog = Backlog(max_bytes=100)
    for seq in range(1, 6):
        backlog.append(seq, [(b"%d" % seq, value)])
    assert backlog.oldest_seq == 4                  # 4 and 5 fit in 100 bytes, 3 more would not
    assert backlog.since(0, 1 << 20) is None
    assert backlog.since(2, 1 << 20) is None        # write 3 is gone
    assert backlog.since(3, 1 << 20) == [(4, [(b"4", value)]), (5, [(b"5", value)])]


def test_a_batch_bigger_than_the_backlog_is_kept_until_the_next_one():
    backlog = Backlog(max_bytes=10)
    big = [(b"k", b"x" * 100)]
    backlog.append(1, big)
    assert backlog.since(0, 1 << 20) == [(1, big)]
    backlog.append(2, [(b"k", b"y")])
    assert backlog.since(0, 1 << 20) is None and backlog.since(1, 1 << 20) == [(2, [(b"k", b"y")])]


@pytest.mark.parametrize("max_bytes", [1, 39, 40, 41, 100, 200, 1 << 20])
def test_since_answers_about_max_bytes_and_at_least_one_batch(max_bytes):
    value = b"x" * 30
    backlog = Backlog(max_bytes=1 << 20)
    for seq in range(1, 11):
        backlog.append(seq, [(b"%d" % seq, value)])
    batches = backlog.since(0, max_bytes)
    assert batches, "at least one batch"
    assert [first for first, _ in batches] == list(range(1, len(batches) + 1))
    sizes = [entry_bytes(entries) for _, entries in batches]
    assert sum(sizes[:-1]) < max_bytes                  # it stopped at the first batch past it
    assert len(batches) == 10 or sum(sizes) >= max_bytes  # and did not stop early


# -- the state file ----------------------------------------------------------------------------

@pytest.mark.parametrize("state", [ReplicationState(), ReplicationState(HISTORY),
                                   ReplicationState(HISTORY, 42, "127.0.0.1:7000"),
                                   ReplicationState(None, 0, "node-1:7000")])
def test_the_state_round_trips(state):
    assert decode_state(encode_state(state)) == state


BAD_STATES = {
    "empty": b"",
    "not json": b"REPLICATION",
    "not utf-8": b"\xff\xfe{",
    "a list": b"[]",
    "a number": b"5",
    "null": b"null",
    "no fields": b"{}",
    "no master": b'{"history": null, "applied": 0}',
    "history int": b'{"history": 5, "applied": 0, "master": null}',
    "applied str": b'{"history": null, "applied": "1", "master": null}',
    "applied negative": b'{"history": null, "applied": -1, "master": null}',
    "applied bool": b'{"history": null, "applied": true, "master": null}',
    "applied float": b'{"history": null, "applied": 1.5, "master": null}',
    "master list": b'{"history": null, "applied": 0, "master": ["h", 1]}',
}


@pytest.mark.parametrize("data", list(BAD_STATES.values()), ids=list(BAD_STATES))
def test_a_bad_state_file_raises_corruption_naming_it(data):
    with pytest.raises(CorruptionError) as caught:
        decode_state(data, "/data/REPLICATION")
    assert caught.value.path == "/data/REPLICATION"


def test_load_state_of_a_missing_file_is_the_default(tmp_path):
    assert load_state(str(tmp_path)) == ReplicationState(None, 0, None)


def test_save_then_load_gives_the_latest_state(tmp_path):
    save_state(str(tmp_path), ReplicationState(HISTORY, 3, "127.0.0.1:1"))
    save_state(str(tmp_path), ReplicationState(HISTORY, 99, "127.0.0.1:2"))
    assert load_state(str(tmp_path)) == ReplicationState(HISTORY, 99, "127.0.0.1:2")
    assert sorted(p.name for p in tmp_path.iterdir()) == [STATE_FILE]


def test_load_state_of_a_corrupt_file_raises_corruption(tmp_path):
    (tmp_path / STATE_FILE).write_bytes(b'{"history": "h", "applied": ')
    with pytest.raises(CorruptionError) as caught:
        load_state(str(tmp_path))
    assert caught.value.path == str(tmp_path / STATE_FILE)
