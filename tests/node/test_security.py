"""CURVE on real nodes (CONTRACT.md section 8): every peer the cluster's keys do not name gets
nothing, a client key gets the data operations only, the wipe attack of issue 11 fails, and
each refusal leaves the data as it was, the node serving, and a count in its stats."""
import os
import socket
import time

import msgpack
import pytest
import zmq

from yaddb import Client
from yaddb.errors import NotPermitted, Unavailable
from yaddb.replication.messages import HEARTBEAT_S
from yaddb.transport.client_conn import Connection
from yaddb.transport.curve import CurvePair
from yaddb.transport.keys import load_keys, make_keys
from yaddb.transport.protocol import CONTROL_OPS, REPLICATION_OPS, encode_request
from tests.helpers import run_script, wait_for

KEYS = 100
SILENCE_S = 1.0  # how long a refused peer is listened to for a reply that must not come
REPLICATION_ARGS = {"sync": ["h", 0, 1 << 20], "chunk": [0], "replica": ["127.0.0.1:1", "h", 0, True],
                    "ack": ["127.0.0.1:1", "h", 0], "follow": ["127.0.0.1:1"], "values": [[b"k"]],
                    "lease": [99, None, 60.0], "promote": [99, []], "replicaof": [99, "127.0.0.1:1"]}


@pytest.fixture
def keys(tmp_path):
    directory = tmp_path / "keys"
    make_keys(str(directory))
    return str(directory)


def member(keys):
    cluster = load_keys(keys)
    return CurvePair(cluster.member_public, cluster.member_secret, cluster.member_public)


def stranger(keys):
    """A well-formed key pair the cluster never heard of."""
    public, secret = zmq.curve_keypair()
    return CurvePair(public, secret, load_keys(keys).member_public)


def fill(node, keys, count=KEYS):
    with Client(node.endpoint, timeout=10, keys=keys) as client:
        client.mset({b"key%03d" % i: b"value%03d" % i for i in range(count)})


def held(node, keys, count=KEYS):
    """How many of fill()'s keys the node holds, each with its value (read as a client); 0
    while a slave is not ready to serve reads."""
    with Client(node.endpoint, timeout=10, keys=keys, direct=False) as client:
        try:
            items = client.mget([b"key%03d" % i for i in range(count)])
        except Unavailable:
            return 0
    return sum(item is not None and item.value == b"value%03d" % i for i, item in enumerate(items))


def refused(node, keys):
    with Client(node.endpoint, timeout=10, keys=keys) as client:
        return client.stats().get("refused", {})


def unanswered(endpoint, op, args, pair=None):
    """True when a request sent with `pair` (None: no key) gets no reply at all."""
    context = zmq.Context.instance()
    sock = context.socket(zmq.DEALER)
    sock.linger = 0
    if pair is not None:
        pair.secure_client(sock)
    try:
        sock.connect(endpoint)
        sock.send(encode_request(1, op, args))
        return not sock.poll(int(SILENCE_S * 1000))
    finally:
        sock.close()


def test_peers_without_the_clusters_keys_get_nothing_and_change_nothing(tmp_path, processes, keys):
    node = processes.node(tmp_path / "node", "--keys-dir", keys).wait_ready()
    fill(node, keys)
    assert unanswered(node.endpoint, "del", [b"key000"])                   # no key
    assert unanswered(node.endpoint, "del", [b"key001"], stranger(keys))   # an unknown key
    assert unanswered(node.endpoint, "mdel", [[b"key002"]], stranger(keys))
    for garbage in (b"\x00" * 64, b"\xff" + os.urandom(200), b"GET / HTTP/1.0\r\n\r\n",
                    b"\xff\x00\x00\x00\x00\x00\x00\x00\x01\x7f\x03\x00CURVE" + os.urandom(300)):
        with socket.create_connection(("127.0.0.1", node.port), timeout=5) as raw:
            raw.sendall(garbage)
            raw.settimeout(SILENCE_S)
            answer = b""
            try:
                while chunk := raw.recv(4096):
                    answer += chunk
            except (socket.timeout, ConnectionResetError):
                pass  # left hanging, or dropped: either way, nothing
            # The greeting ZeroMQ sends before it looks at anything is all a stranger gets.
            assert len(answer) <= 64, answer
    assert node.running
    assert held(node, keys) == KEYS
    counts = wait_for(lambda: (lambda c: c.get("handshake", 0) >= 2 and c.get("unknown_key", 0) >= 2
                               and c)(refused(node, keys)), "the refusals to be counted", 30)
    assert counts.get("not_permitted", 0) == 0
    # Counted, not flooding the log: one line per reason per 10 s.
    assert node.log().count("refused") <= 4, node.log()[-3000:]


def test_a_client_key_gets_data_operations_and_nothing_else(tmp_path, processes, keys):
    node = processes.node(tmp_path / "node", "--keys-dir", keys).wait_ready()
    fill(node, keys)
    with Client(node.endpoint, timeout=10, keys=keys) as client:
        assert client.ping() and client.stats()["role"] == "master"
        client.set(b"extra", b"x")
        assert client.delete(b"extra") and client.get(b"extra") is None
    client_pair = CurvePair.from_directory(keys)
    connection = Connection(node.endpoint, 10, secure=client_pair.secure_client)
    try:
        for op in sorted(REPLICATION_OPS | CONTROL_OPS):
            with pytest.raises(NotPermitted, match=f"{op} is for the cluster's members"):
                connection.call(op, REPLICATION_ARGS[op])
    finally:
        connection.close()
    assert node.running and held(node, keys) == KEYS
    with Client(node.endpoint, timeout=10, keys=keys) as client:
        stats = client.stats()
    assert stats["refused"]["not_permitted"] == len(REPLICATION_OPS | CONTROL_OPS)
    assert stats["role"] == "master" and stats.get("epoch", 0) == 0  # no lease, no promote taken


def test_the_wipe_attack_of_issue_11_leaves_the_slave_whole(tmp_path, processes, keys):
    """One `follow` frame to a slave made it follow an empty master and wiped it; now a
    client key is refused it, and a peer with no key is not even answered."""
    master = processes.node(tmp_path / "master", "--keys-dir", keys).wait_ready()
    empty = processes.node(tmp_path / "empty", "--keys-dir", keys).wait_ready()
    fill(master, keys)
    slave = processes.node(tmp_path / "slave", "--keys-dir", keys, role=(
        "slave", "--master-host", "127.0.0.1", "--master-port", str(master.port))).wait_ready()
    wait_for(lambda: held(slave, keys) == KEYS, "the slave to hold every key", 60)

    assert unanswered(slave.endpoint, "follow", [empty.address])
    connection = Connection(slave.endpoint, 10, secure=CurvePair.from_directory(keys).secure_client)
    try:
        with pytest.raises(NotPermitted):
            connection.call("follow", [empty.address])
    finally:
        connection.close()
    time.sleep(HEARTBEAT_S * 4)  # a follow that got through would be wiping by now
    assert held(slave, keys) == KEYS
    with Client(slave.endpoint, timeout=10, keys=keys) as client:
        assert client.stats()["replication"]["master"] == master.address
    with Client(master.endpoint, timeout=10, keys=keys) as client:  # still replicating
        client.set(b"after", b"attack")
    with Client(slave.endpoint, timeout=10, keys=keys, direct=False) as client:
        wait_for(lambda: client.get(b"after") is not None, "a later write to reach the slave")


def test_only_members_hear_the_write_log(tmp_path, processes, keys):
    node = processes.node(tmp_path / "node", "--keys-dir", keys).wait_ready()
    context = zmq.Context.instance()
    heard = {}
    for name, pair in (("client", CurvePair.from_directory(keys)), ("member", member(keys))):
        sub = context.socket(zmq.SUB)
        sub.linger = 0
        pair.secure_client(sub)
        sub.subscribe(b"")
        sub.connect(f"tcp://127.0.0.1:{node.pub_port}")
        try:
            fill(node, keys, 3)  # and the heartbeat every HEARTBEAT_S
            heard[name] = bool(sub.poll(int((SILENCE_S + HEARTBEAT_S * 4) * 1000)))
        finally:
            sub.close()
    assert heard == {"client": False, "member": True}
    assert wait_for(lambda: refused(node, keys).get("unknown_key", 0) >= 1,
                    "the client's refused subscription to be counted", 30)


def test_a_secret_key_others_may_read_stops_the_node_at_start(tmp_path, keys):
    os.chmod(os.path.join(keys, "member.key_secret"), 0o644)
    result = run_script("run_node.py", "--keys-dir", keys, "--data-dir", str(tmp_path / "node"),
                        "-p", "1", "master", cwd=tmp_path)
    assert result.returncode == 2
    assert "member.key_secret may be read by others" in result.stderr
    assert "chmod 600" in result.stderr


def test_protected_mode_a_node_beyond_loopback_needs_keys_or_insecure(tmp_path, keys):
    # 192.0.2.1 is a documentation address no machine has: the node never serves there.
    base = ["-H", "192.0.2.1", "--data-dir", str(tmp_path / "node"), "-p", "7", "master"]
    refusal = run_script("run_node.py", *base, cwd=tmp_path)
    assert refusal.returncode == 2
    assert "--keys-dir" in refusal.stderr and "--insecure" in refusal.stderr
    insecure = run_script("run_node.py", "--insecure", *base, cwd=tmp_path)
    assert "INSECURE" in insecure.stderr and "cannot serve" in insecure.stderr  # it tried
    keyed = run_script("run_node.py", "--keys-dir", keys, *base, cwd=tmp_path)
    assert "protected mode" not in keyed.stderr and "cannot serve" in keyed.stderr


def test_a_garbage_request_from_a_member_is_an_error_reply_not_a_crash(tmp_path, processes, keys):
    node = processes.node(tmp_path / "node", "--keys-dir", keys).wait_ready()
    sock = zmq.Context.instance().socket(zmq.DEALER)
    sock.linger = 0
    member(keys).secure_client(sock)
    sock.connect(node.endpoint)
    try:
        for frame in (b"\xc1", msgpack.packb([1, 5, "nope", []]), b""):
            sock.send(frame)
            assert sock.poll(10_000), frame
            assert msgpack.unpackb(sock.recv())[2] != 0  # an error status
    finally:
        sock.close()
    assert node.running
