"""Batches from a client that routes by itself (yaddb/client.py): mset, mget and mdelete are
split by partition and sent to every master at once, not through the router; when a master
does not answer, a read's part goes through the router (to a slave), and a write says its
part may or may not be applied, while the other partition's part is."""
import os
import signal

import pytest

from yaddb import Client
from yaddb.errors import YaddbTimeout
from yaddb.placement import partition_for
from tests.helpers import wait_for


def router_counts(router):
    with Client(router.endpoint, timeout=10, direct=False) as client:
        return client.stats()["requests"]


@pytest.fixture
def cluster(tmp_path, processes):
    return processes.router(tmp_path / "data").wait_ready()


def test_batches_go_straight_to_the_masters_and_answer_in_order(cluster):
    keys = [b"batch:%d" % n for n in range(200)]
    assert {partition_for(key, 2) for key in keys} == {0, 1}
    before = router_counts(cluster)
    with Client(cluster.endpoint, timeout=10) as client:
        assert client.mset({key: b"value of " + key for key in keys}) == keys
        got = client.mget(keys[::-1] + [b"never-set"])
        assert [item and item.value for item in got] == [b"value of " + k for k in keys[::-1]] + [None]
        assert client.mdelete([keys[0], b"never-set", keys[1]]) == [True, False, True]
        assert client.mget(keys[:3])[:2] == [None, None]
        assert client.direct is True
    after = router_counts(cluster)
    for op in ("mset", "mget", "mdel"):
        assert after.get(op, 0) == before.get(op, 0), op  # none of them through the router


def test_a_frozen_master_sends_reads_through_the_router_and_fails_writes_aloud(cluster):
    keys = [b"frozen:%d" % n for n in range(100)]
    writes = {b"after:%d" % n: b"v" for n in range(100)}
    with Client(cluster.endpoint, timeout=4) as writer:
        writer.mset({key: key for key in keys}, w="all")  # on every slave too

        def slaves_serve_reads():  # the router learns slaves from their masters' stats
            return all(slave.get("ready") and slave.get("alive")
                       for partition in writer.stats()["partitions"]
                       for slave in partition["slaves"] or [{}])
        wait_for(slaves_serve_reads, "the router to know both slaves ready")
        frozen = cluster.master_pid(0)
        os.kill(frozen, signal.SIGSTOP)
        try:
            with Client(cluster.endpoint, timeout=4) as reader:
                # Partition 0's part is not sent (no connection completes to a frozen
                # process) or times out; either way the router reads it from a slave.
                assert [item and item.value for item in reader.mget(keys)] == keys
            # The writer's connection to the master was made before it froze: its part is
            # sent and never answered, so it may or may not be applied, and says so.
            with pytest.raises(YaddbTimeout, match="may or may not have been applied"):
                writer.mset(writes)
            with Client(cluster.endpoint, timeout=10, direct=False) as router:
                applied = router.mget([key for key in writes if partition_for(key, 2) == 1])
            assert all(item and item.value == b"v" for item in applied)
        finally:
            os.kill(frozen, signal.SIGCONT)
