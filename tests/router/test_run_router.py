"""`run_router.py` as a user runs it: the one-command cluster, started and stopped by the test."""
import os
import signal
import subprocess
import sys

import pytest

from yaddb import Client
from yaddb.errors import YaddbError
from tests.helpers import REPO_ROOT, child_env, free_port, wait_for


class RouterProcess:
    def __init__(self, tmp_path, data_dir, *args):
        self.zmq_port = free_port()
        self.endpoint = f"tcp://127.0.0.1:{self.zmq_port}"
        self.log_path = tmp_path / f"router-{self.zmq_port}.log"
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, str(REPO_ROOT / "run_router.py"), "--zmq-port", str(self.zmq_port),
                 "-p", str(free_port()), "--data-dir", str(data_dir), *args],
                stdout=log, stderr=subprocess.STDOUT, env=child_env(), cwd=str(tmp_path),
                start_new_session=True)

    def log(self):
        return self.log_path.read_text(errors="replace")

    def wait_ready(self):
        with Client(self.endpoint, timeout=1.0) as client:
            def answers():
                if self.proc.poll() is not None:
                    raise AssertionError(f"router exited with {self.proc.returncode}:\n{self.log()}")
                try:
                    return client.ping()
                except YaddbError:
                    return False
            wait_for(answers, "the router to answer", timeout=60)
        return self

    def node_pids(self):
        """pids of run_node.py processes whose parent is this router."""
        pids = []
        for name in os.listdir("/proc"):
            if name.isdigit():
                try:
                    with open(f"/proc/{name}/stat") as file:
                        stat = file.read()
                    with open(f"/proc/{name}/cmdline", "rb") as file:
                        cmdline = file.read()
                except OSError:
                    continue
                if int(stat[stat.rindex(")") + 2:].split()[1]) == self.proc.pid and b"run_node.py" in cmdline:
                    pids.append(int(name))
        return pids

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                return self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                pass
        return self.kill()

    def kill(self):
        for pid in self.node_pids():
            try:
                os.killpg(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        return self.proc.wait(timeout=60)


@pytest.fixture
def routers():
    started = []
    yield started
    for router in started:
        router.kill()


def test_the_one_command_cluster_starts_serves_stops_and_keeps_its_data(tmp_path, routers):
    data = tmp_path / "data"
    router = RouterProcess(tmp_path, data)
    routers.append(router)
    router.wait_ready()
    nodes = router.node_pids()
    assert len(nodes) == 2
    with Client(router.endpoint, timeout=5) as client:
        keys = client.mset([(b"k%d" % i, b"v%d" % i) for i in range(100)])
        stats = client.stats()
        assert [p["alive"] for p in stats["partitions"]] == [True, True]
    assert "native clients: " in router.log()
    assert router.stop() == 0
    wait_for(lambda: not any(os.path.exists(f"/proc/{pid}") and
                             open(f"/proc/{pid}/stat").read().split(") ")[1][0] != "Z"
                             for pid in nodes), "the nodes to exit with the router")
    router = RouterProcess(tmp_path, data)  # new ports, same data
    routers.append(router)
    router.wait_ready()
    with Client(router.endpoint, timeout=5) as client:
        assert [item.value for item in client.mget(keys)] == [b"v%d" % i for i in range(100)]


def test_two_routers_on_one_data_dir_get_a_clear_error(tmp_path, routers):
    data = tmp_path / "data"
    first = RouterProcess(tmp_path, data)
    routers.append(first)
    first.wait_ready()
    second = RouterProcess(tmp_path, data)
    routers.append(second)
    assert second.proc.wait(timeout=60) == 1
    assert "in use by another process" in second.log()
    with Client(first.endpoint, timeout=5) as client:
        assert client.ping()


def test_a_node_that_dies_is_reported_and_restarted(tmp_path, routers):
    router = RouterProcess(tmp_path, tmp_path / "data")
    routers.append(router)
    router.wait_ready()
    with Client(router.endpoint, timeout=5) as client:
        client.mset([(b"k%d" % i, b"v") for i in range(20)])
        victim = router.node_pids()[0]
        os.killpg(victim, signal.SIGKILL)
        wait_for(lambda: "restarting it" in router.log(), "the router to report the dead node")
        wait_for(lambda: len(router.node_pids()) == 2 and victim not in router.node_pids(),
                 "the node to be restarted")

        def all_served():
            try:
                return all(item and item.value == b"v" for item in client.mget([b"k%d" % i for i in range(20)]))
            except YaddbError:
                return False
        wait_for(all_served, "every key to be served again", timeout=60)
