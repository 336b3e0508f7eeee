"""A read whose node fails during the request is retried on another ready member: through the
router, and on the client's direct path. Real node processes, a router loop in a thread."""
import signal
import threading

import pytest
import zmq

from yaddb import Client
from yaddb.errors import NotApplied
from yaddb.router.server import RouterServer
from tests.helpers import free_port, wait_for

KEYS = [b"key%03d" % i for i in range(200)]


@pytest.fixture
def replicated(tmp_path, processes):
    """One partition: a master, a slave holding every key, and a router loop (reads spread
    over both); yields (router endpoint, master, router)."""
    master = processes.node(tmp_path / "master")
    master.wait_ready()
    slave = processes.node(tmp_path / "slave", role=("slave", "--master-host", "127.0.0.1",
                                                     "--master-port", str(master.port)))
    slave.wait_ready()
    context = zmq.Context()
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    router = RouterServer([master.address], [endpoint], context, node_timeout=0.5,
                          read_preference="any")
    thread = threading.Thread(target=router.serve, daemon=True)
    thread.start()
    try:
        assert router.ready.wait(30)
        with Client(endpoint, timeout=5) as client:
            for key in KEYS:
                client.set(key, key + b"-value")

        def slave_ready_and_current():
            slaves = router.status()["partitions"][0]["slaves"]
            return slaves and slaves[0]["alive"] and slaves[0]["ready"] and slaves[0]["lag"] == 0 \
                and slaves[0]["applied"] >= len(KEYS)
        wait_for(slave_ready_and_current, "the router to see the slave ready and caught up")
        yield endpoint, master, router
    finally:
        router.stop()
        thread.join(30)
        context.term()


@pytest.mark.parametrize("fault", [signal.SIGKILL, signal.SIGSTOP])
@pytest.mark.parametrize("direct", [False, True])
def test_no_read_fails_while_the_slave_answers(replicated, fault, direct):
    """Reads alternate between master and slave; with the master killed (the send fails, or
    no reply comes) or frozen (no reply within the node timeout), each one that went to it is
    answered by the slave instead of a 503."""
    endpoint, master, router = replicated
    with Client(endpoint, timeout=5, read_retries=0, direct=direct) as client:
        assert client.get(KEYS[0]).value == KEYS[0] + b"-value"  # the map, when direct
        master.child.signal(fault)
        try:
            values = [client.get(key) for key in KEYS[:40]]
        finally:
            master.child.signal(signal.SIGCONT)
    assert [item.value for item in values] == [key + b"-value" for key in KEYS[:40]]
    assert router.counts.get("read_retries", 0) >= 1
    assert router.counts.get("unavailable", 0) == 0 or direct


def test_a_write_is_not_retried_elsewhere(replicated):
    """Only reads move: a write to a dead master says the master is unreachable, and, once
    the router has no connection to it, that nothing was applied."""
    endpoint, master, router = replicated
    master.kill(signal.SIGKILL)
    wait_for(lambda: not router.status()["partitions"][0]["alive"], "the router to see the master down")
    with Client(endpoint, timeout=5, direct=False) as client:
        with pytest.raises(NotApplied, match="master .* is not reachable.*nothing was applied"):
            client.set(b"new", b"value")
        assert client.get(b"new") is None
