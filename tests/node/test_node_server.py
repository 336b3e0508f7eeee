"""A node loop in a thread, over TCP on loopback, driven by the real client and by raw sockets."""
import os
import random
import threading
import time

import msgpack
import pytest
import zmq

from yaddb import Client, Item, key_for
from yaddb.errors import BadMessage, InvalidKey, ValueTooLarge, YaddbError, YaddbTimeout
from yaddb.transport.client_conn import NotSent
from yaddb.transport.protocol import VERSION, decode_reply, encode_request
from tests.helpers import free_port


def test_the_client_api_against_a_node(thread_node):
    client = thread_node().client()
    assert client.ping() is True
    assert client.set(b"k", b"v", content_type="text/plain", encoding="utf-8") == b"k"
    assert client.get(b"k") == Item("text/plain", "utf-8", b"v")
    assert client.get(b"absent") is None
    assert client.delete(b"k") is True and client.delete(b"k") is False and client.get(b"k") is None
    key = client.set(None, "héllo")
    assert key == key_for("héllo".encode()) and client.get(key) == Item("text/plain", "utf-8", "héllo".encode())
    assert client.get(client.set(b"raw", b"\xff\x00")) == Item("application/octet-stream", "binary", b"\xff\x00")
    assert client.mset({b"a": b"1", b"b": "2"}) == [b"a", b"b"]
    assert client.mset([(b"c", b"3", "x/y", "z")]) == [b"c"]
    assert [i and i.value for i in client.mget([b"a", b"b", b"c", b"zz"])] == [b"1", b"2", b"3", None]
    assert client.mget([b"c"])[0] == Item("x/y", "z", b"3")
    assert client.mdelete([b"a", b"zz"]) == [True, False]
    assert client.stats()["role"] == "master"


def test_client_side_limits_raise_before_sending(thread_node):
    client = thread_node(max_value_bytes=100).client(max_value_bytes=100)
    with pytest.raises(InvalidKey):
        client.set(b"", b"v")
    with pytest.raises(InvalidKey):
        client.get("text key")
    with pytest.raises(ValueTooLarge):
        client.set(b"k", b"x" * 101)
    with pytest.raises(YaddbError, match="content_type"):
        client.set(b"k", b"v", content_type="x" * 300)


def test_the_node_enforces_its_own_value_limit(thread_node):
    node = thread_node(max_value_bytes=100)
    client = node.client(max_value_bytes=10_000)  # a client that thinks the limit is higher
    with pytest.raises(ValueTooLarge, match="limit is 100"):
        client.set(b"k", b"x" * 101)
    assert client.get(b"k") is None and node.engine.sequence == 0


def test_writes_from_many_clients_at_once_are_all_acknowledged_and_kept(thread_node):
    node = thread_node(fsync="always")
    errors = []

    def writer(number: int) -> None:
        with Client(node.endpoint, timeout=30, context=node.context) as client:
            try:
                for i in range(100):
                    client.set(b"c%d-%d" % (number, i), b"%d" % i)
            except Exception as exc:  # reported below; a thread cannot fail the test itself
                errors.append(exc)

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert not errors
    assert node.engine.sequence == 600
    check = node.client()
    assert all(check.get(b"c%d-%d" % (n, i)).value == b"%d" % i for n in range(6) for i in range(100))


def test_a_dead_endpoint_times_out_within_the_deadline():
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    for timeout in (0.3, 0.6):
        with Client(endpoint, timeout=timeout) as client:
            # reads try three times within the timeout (Lazy Pirate), writes once
            for call in (lambda: client.get(b"k"), lambda: client.ping(), lambda: client.set(b"k", b"v")):
                started = time.monotonic()
                with pytest.raises(YaddbTimeout):
                    call()
                elapsed = time.monotonic() - started
                assert timeout * 0.9 <= elapsed < timeout + 2.0


def test_a_timed_out_write_says_it_may_have_been_applied():
    context = zmq.Context.instance()
    silent = context.socket(zmq.ROUTER)  # takes the request, never answers
    silent.setsockopt(zmq.LINGER, 0)
    port = silent.bind_to_random_port("tcp://127.0.0.1")
    try:
        for direct in (False, True):  # direct: the map request is the one left unanswered
            with Client(f"tcp://127.0.0.1:{port}", timeout=0.3, direct=direct) as client:
                with pytest.raises(YaddbTimeout) as caught:
                    client.set(b"k", b"v")
            assert ("may or may not have been applied" in str(caught.value)) is not direct
    finally:
        silent.close()


def test_a_write_that_could_not_be_sent_says_so():
    with Client(f"tcp://127.0.0.1:{free_port()}", timeout=0.2) as client:
        with pytest.raises(NotSent, match="could not connect"):
            client.set(b"k", b"v")


def _raw_dealer(context, endpoint):
    sock = context.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.RCVTIMEO, 10_000)
    sock.connect(endpoint)
    return sock


def test_garbage_frames_get_error_replies_and_leave_the_node_serving(thread_node):
    node = thread_node()
    client = node.client()
    for i in range(50):
        client.set(b"keep%d" % i, b"value%d" % i)
    rng = random.Random(5)
    valid = [encode_request(i, op, args) for i, (op, args) in enumerate(
        [("get", [b"k"]), ("set", [b"k", b"\x00\x00v"]), ("mget", [[b"a", b"b"]]), ("ping", [])])]
    sock = _raw_dealer(node.context, node.endpoint)
    try:
        sent = 0
        for round_ in range(40):
            frames = []
            for _ in range(100):
                kind = rng.random()
                if kind < 0.4:
                    frame = os.urandom(rng.randrange(0, 64))
                elif kind < 0.8:  # a valid request, mutated
                    frame = bytearray(rng.choice(valid))
                    for _ in range(rng.randrange(1, 4)):
                        frame[rng.randrange(len(frame))] = rng.randrange(256)
                    frame = bytes(frame)
                else:  # well-formed msgpack of the wrong shape
                    frame = msgpack.packb(rng.choice([[VERSION, 1, "get", [1]], {"a": 1}, [1, 2, 3, 4],
                                                      [VERSION, 2, "set", [b"k"]], "text", None]))
                frames.append(frame)
            for frame in frames:
                sock.send(frame)
            for _ in frames:
                reply = decode_reply(sock.recv())  # every frame gets exactly one reply
                assert reply.status in (0, 1, 2, 5)
            sent += len(frames)
        # Frames before the last are a route (as a router adds): echoed back before the reply.
        sock.send_multipart([b"route", b"\x93garbage"])
        route, reply = sock.recv_multipart()
        assert route == b"route"
        with pytest.raises(BadMessage):
            decode_reply(reply).result()
    finally:
        sock.close()
    assert node.handler.counts["bad_message"] >= sent // 3
    assert client.ping()
    assert all(client.get(b"keep%d" % i).value == b"value%d" % i for i in range(50))


def test_replies_match_requests_when_pipelined_and_share_fsyncs(thread_node):
    node = thread_node(fsync="always")
    sock = _raw_dealer(node.context, node.endpoint)
    try:
        for i in range(200):
            sock.send(encode_request(1000 + i, "set", [b"p%d" % i, b"\x00\x00%d" % i]))
        replies = [decode_reply(sock.recv()) for _ in range(200)]
    finally:
        sock.close()
    assert sorted(r.request_id for r in replies) == list(range(1000, 1200))
    assert sorted(r.result() for r in replies) == list(range(1, 201))
    # Requests waiting together are one round with one fsync (group commit).
    assert node.engine.stats()["log_fsyncs"] < 100


def test_a_batch_over_the_message_limit_is_refused_by_the_client(thread_node):
    client = thread_node(max_value_bytes=1000).client(max_value_bytes=1000)
    with pytest.raises(YaddbError, match="split it"):
        client.mset([(b"k%d" % i, b"x" * 1000) for i in range(17_000)])
    assert client.mget([b"k0"]) == [None]


def test_a_frame_over_the_size_limit_is_refused_without_harm(thread_node):
    node = thread_node(max_value_bytes=1000)
    client = node.client()
    client.set(b"k", b"v")
    from yaddb.transport.sockets import max_message_bytes
    sock = _raw_dealer(node.context, node.endpoint)
    sock.setsockopt(zmq.RCVTIMEO, 1000)
    try:
        sock.send(b"\x00" * (max_message_bytes(1000) + 1))
        with pytest.raises(zmq.Again):
            sock.recv()  # libzmq drops the connection: no reply, and no memory spent on it
    finally:
        sock.close()
    assert client.get(b"k").value == b"v"
