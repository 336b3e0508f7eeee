"""A master's lease (docs/failover.md): a real run_node.py master, leased by the test as a
router would; once leased it takes writes only while its lease runs, also after a restart, and
it refuses control messages of an older epoch."""
import time

import pytest

from yaddb import Client
from yaddb.errors import NotApplied, StaleEpoch
from yaddb.transport.client_conn import Connection
from tests.helpers import wait_for

LEASE_S = 1.0


def lease(node, epoch, granted_at, seconds=LEASE_S) -> dict:
    conn = Connection(node.endpoint, 5.0)
    try:
        return conn.call("lease", [epoch, granted_at, seconds])
    finally:
        conn.close()


def grant(node, epoch=1) -> float:
    """A lease in force: two messages, the second carrying the node's time from the first."""
    first = lease(node, epoch, None)
    return lease(node, epoch, first["now"])["now"]


def writes(client: Client) -> bool:
    try:
        client.set(b"probe", b"v")
        return True
    except NotApplied as exc:
        assert "lease ran out" in str(exc)
        return False


def test_a_leased_master_takes_writes_only_while_its_lease_runs(tmp_path, processes):
    master = processes.node(tmp_path / "master")
    master.wait_ready()
    with Client(master.endpoint, timeout=5, direct=False) as client:
        assert writes(client)  # never leased: a standalone node, as before
        first = lease(master, 1, None)
        assert not writes(client)  # leased from now on, but no lease in force yet
        answer = lease(master, 1, first["now"])
        assert answer["epoch"] == 1 and 0 < answer["lease_s"] <= LEASE_S
        assert writes(client)
        stopped = time.monotonic()
        wait_for(lambda: not writes(client), "the lease to run out", 30)
        assert time.monotonic() - stopped < LEASE_S + 1.0
        assert client.get(b"probe").value == b"v"  # reads go on
        assert client.stats()["leased"] is True


def test_a_late_grant_cannot_move_the_lease_past_its_time(tmp_path, processes):
    """A grant carries the node's own time from an earlier answer: one held up in the network
    for longer than a lease extends nothing."""
    master = processes.node(tmp_path / "master")
    master.wait_ready()
    stale = lease(master, 1, None)["now"]
    time.sleep(LEASE_S + 0.2)  # the message is "late": its granted_at is over a lease old
    assert lease(master, 1, stale)["lease_s"] == 0.0
    with Client(master.endpoint, timeout=5, direct=False) as client:
        assert not writes(client)


def test_older_epochs_are_refused_and_the_fence_survives_a_restart(tmp_path, processes):
    master = processes.node(tmp_path / "master")
    master.wait_ready()
    grant(master, epoch=3)
    with pytest.raises(StaleEpoch, match="epoch 2 refused: this node has seen epoch 3"):
        lease(master, 2, None)
    master.stop()
    master = processes.node(tmp_path / "master", port=master.port)
    master.wait_ready()
    with Client(master.endpoint, timeout=5, direct=False) as client:
        assert client.stats()["epoch"] == 3
        assert not writes(client)  # leased before: no writes until a router leases it again
        grant(master, epoch=3)
        assert writes(client)
