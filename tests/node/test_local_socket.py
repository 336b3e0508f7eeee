"""The node's same-machine socket (transport/local.py): a node loop in a thread, driven by
LocalConnection and by raw Unix sockets; other users' processes are real forked processes."""
import os
import socket
import sys
import threading

import msgpack
import pytest

from yaddb import Item
from yaddb.errors import BadMessage, NotPermitted, YaddbTimeout
from yaddb.item import decode_item, encode_item
from yaddb.transport import local
from yaddb.transport.local import LENGTH, FramingError, local_name, take_messages
from yaddb.transport.local_conn import LocalConnection
from yaddb.transport.protocol import decode_reply, encode_request
from tests.helpers import wait_for

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"),
                                reason="abstract Unix sockets are Linux's")
NOBODY = 65534


def address_of(node):
    return node.endpoint.partition("://")[2]


def raw_socket(node):
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.connect(local_name(address_of(node)))
    sock.settimeout(10)
    return sock


def read_replies(sock, count):
    received, replies = bytearray(), []
    while len(replies) < count:
        data = sock.recv(1 << 20)
        assert data, f"the node closed the connection after {len(replies)} replies"
        received += data
        replies += [decode_reply(m) for m in take_messages(received, 1 << 30)]
    return replies


def framed(frame):
    return LENGTH.pack(len(frame)) + frame


def test_take_messages_keeps_a_partial_message_and_refuses_an_oversized_one():
    buffer = bytearray(framed(b"one") + framed(b"") + framed(b"three")[:6])
    assert take_messages(buffer, 100) == [b"one", b""]
    assert buffer == framed(b"three")[:6]
    buffer += framed(b"three")[6:]
    assert take_messages(buffer, 100) == [b"three"] and buffer == b""
    with pytest.raises(FramingError, match="101 bytes"):
        take_messages(bytearray(LENGTH.pack(101) + b"x" * 101), 100)


def test_a_local_connection_reads_and_writes_the_nodes_data(thread_node):
    node = thread_node()
    conn = LocalConnection.open(address_of(node), 5.0)
    assert conn is not None
    blob = encode_item("text/plain", "utf-8", b"over the local socket")
    assert conn.call("set", [b"k", blob]) >= 1
    assert node.client().get(b"k") == Item("text/plain", "utf-8", b"over the local socket")
    node.client().set(b"z", b"over zeromq")
    assert decode_item(conn.call("get", [b"z"])).value == b"over zeromq"
    assert conn.call("mget", [[b"k", b"absent"]])[1] is None
    conn.close()
    assert LocalConnection.open("127.0.0.1:1", 1.0) is None  # nobody listens there


def test_a_local_peer_has_the_client_role_only(thread_node):
    node = thread_node()
    conn = LocalConnection.open(address_of(node), 5.0)
    with pytest.raises(NotPermitted, match="data operations only"):
        conn.call("replicaof", [1, "127.0.0.1:9"])
    assert node.handler.role == "master"
    assert node.client()._conn.call("stats", [])["role"] == "master"  # ZeroMQ: every op
    assert conn.call("ping", []) == "PONG"
    conn.close()


def test_pipelined_requests_garbage_and_half_messages(thread_node):
    node = thread_node()
    sock = raw_socket(node)
    sock.sendall(b"".join(framed(encode_request(i, "ping", [])) for i in range(50)))
    assert [reply.request_id for reply in read_replies(sock, 50)] == list(range(50))
    sock.sendall(framed(b"\xc1 not msgpack") + framed(msgpack.packb([1, 7, "no-such-op", []])))
    bad, unknown = read_replies(sock, 2)
    with pytest.raises(BadMessage):
        bad.result()
    with pytest.raises(BadMessage, match="no-such-op"):
        unknown.result()
    assert unknown.request_id == 7
    sock.sendall(framed(encode_request(1, "ping", []))[:5])  # half a message, then gone
    sock.close()

    oversized = raw_socket(node)
    oversized.sendall(LENGTH.pack(1 << 30) + b"x" * 1000)
    assert oversized.recv(100) == b""  # cut off, as libzmq does past MAXMSGSIZE
    oversized.close()
    conn = LocalConnection.open(address_of(node), 5.0)
    assert conn.call("ping", []) == "PONG"
    conn.close()


def test_a_peer_that_reads_no_replies_is_dropped(thread_node, monkeypatch):
    monkeypatch.setattr(local, "MAX_QUEUED_BYTES", 4 << 20)
    node = thread_node()
    node.client().set(b"big", b"x" * (1 << 20))
    sock = raw_socket(node)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.sendall(b"".join(framed(encode_request(i, "get", [b"big"])) for i in range(40)))
    wait_for(lambda: not node.server._local.peers, "the node dropping a peer that does not read")
    received = 0
    while True:  # what had been sent is readable, then the end
        data = sock.recv(1 << 20)
        if not data:
            break
        received += len(data)
    sock.close()
    assert received < 40 << 20
    assert node.client().get(b"big").value == b"x" * (1 << 20)


def in_child_as_nobody(work):
    """Run `work()` in a forked child running as user nobody; its exit status is the result."""
    pid = os.fork()
    if pid == 0:
        try:
            os.setgid(NOBODY)
            os.setuid(NOBODY)
            os._exit(work())
        except BaseException as exc:
            print(f"in the child: {exc!r}", file=sys.stderr, flush=True)
            os._exit(99)
    return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to run a process as another user")
def test_another_users_process_gets_nothing(thread_node):
    node = thread_node()
    node.client().set(b"secret", b"v")

    def intrude():
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.connect(local_name(address_of(node)))
        sock.settimeout(10)
        try:
            sock.sendall(framed(encode_request(1, "get", [b"secret"])))
            return 0 if sock.recv(100) == b"" else 1  # closed unanswered
        except (BrokenPipeError, ConnectionResetError):
            return 0

    assert in_child_as_nobody(intrude) == 0
    assert node.client().get(b"secret").value == b"v"

    # And a client does not talk to a socket of another user's: it could be anyone's.
    name = local_name("127.0.0.1:7")
    ready_r, ready_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.setgid(NOBODY)
        os.setuid(NOBODY)
        squatter = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        squatter.bind(name)
        squatter.listen()
        os.write(ready_w, b"x")
        squatter.accept()
        os.read(ready_r, 1)  # until the parent is done
        os._exit(0)
    try:
        assert os.read(ready_r, 1) == b"x"
        with pytest.raises(YaddbTimeout):
            LocalConnection("127.0.0.1:7", name, 1.0).call("ping", [])
        assert LocalConnection.open("127.0.0.1:7", 1.0) is None
    finally:
        os.write(ready_w, b"x")
        os.waitpid(pid, 0)


def test_local_and_zeromq_clients_at_once_are_all_answered(thread_node):
    """The loop asks the ROUTER for messages only when its FD fired or the socket was used:
    a message that arrives while local rounds are handled must still be served at once."""
    node = thread_node()
    conn = LocalConnection.open(address_of(node), 5.0)
    failures = []

    def over_zeromq():
        client = node.client(timeout=5.0, read_retries=0)
        try:
            for i in range(1500):
                client.set(b"z%d" % i, b"v")
                assert client.get(b"z%d" % i).value == b"v"
        except Exception as exc:  # reported below: a thread's assertion would be lost
            failures.append(exc)

    thread = threading.Thread(target=over_zeromq)
    thread.start()
    blob = encode_item("application/octet-stream", "binary", b"w")
    for i in range(1500):
        conn.call("set", [b"l%d" % i, blob])
        assert decode_item(conn.call("get", [b"l%d" % i])).value == b"w"
    thread.join(60)
    conn.close()
    assert not thread.is_alive() and failures == []
    assert node.handler.counts["set"] == 3000
