"""The embedded default cluster: `run_router.py` with no --nodes starts its own nodes.

Each partition's master keeps its data in DATA_DIR/partition-N, and its slave in
DATA_DIR/partition-N-slave-1, from one run to the next, whatever ports they get (a slave resumes
from its master's history id, not its address). Nodes are separate processes (subprocess: fork and exec at once, so no ZeroMQ
context is ever inherited), each in its own process group; a node that dies is logged and
restarted on the same port and directory.
"""
from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from typing import Optional

from yaddb.errors import YaddbError

log = logging.getLogger(__name__)

RUN_NODE = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
                        "run_node.py")
CHECK_EVERY_S = 0.5
START_TRIES = 3


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


class ManagedNode:
    def __init__(self, name: str, data_dir: str, extra_args: list[str],
                 role_args: list[str]) -> None:
        self.name = name
        self.data_dir = data_dir
        self.port = free_port()
        self.pub_port = free_port()
        self.extra_args = extra_args
        self.role_args = role_args
        self.proc: Optional[subprocess.Popen] = None
        self.restarts = 0

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> None:
        os.makedirs(self.data_dir, exist_ok=True)
        log_file = open(os.path.join(self.data_dir, "node.log"), "ab")
        try:
            env = {k: v for k, v in os.environ.items() if not k.startswith("YADDB_")}
            self.proc = subprocess.Popen(
                [sys.executable, RUN_NODE, "-p", str(self.port), "--pub-port", str(self.pub_port),
                 "--data-dir", self.data_dir, *self.extra_args, *self.role_args],
                stdout=log_file, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        finally:
            log_file.close()  # the child has its own copy

    def stop(self, timeout: float) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            log.warning("%s did not stop within %g s; killing it", self.name, timeout)
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()


class EmbeddedCluster:
    """`partitions` masters, each with `slaves` slaves, on free local ports, supervised."""

    def __init__(self, data_dir: str, partitions: int = 2, node_args: Optional[list[str]] = None,
                 slaves: int = 1) -> None:
        args = list(node_args or [])
        self.master_nodes = [ManagedNode(f"partition {i} master",
                                         os.path.join(data_dir, f"partition-{i}"), args, ["master"])
                             for i in range(partitions)]
        self._slave_of: dict[ManagedNode, ManagedNode] = {}
        for i, master in enumerate(self.master_nodes):
            for j in range(1, slaves + 1):
                slave = ManagedNode(f"partition {i} slave {j}",
                                    os.path.join(data_dir, f"partition-{i}-slave-{j}"), args, [])
                self._slave_of[slave] = master
        self.nodes = self.master_nodes + list(self._slave_of)
        self._stopping = threading.Event()
        self._supervisor = threading.Thread(target=self._supervise, name="yaddb-supervisor", daemon=True)

    @property
    def masters(self) -> list[str]:
        return [node.address for node in self.master_nodes]

    def start(self) -> None:
        """Start the masters; wait_ready() starts the slaves once the masters' ports are sure."""
        for node in self.master_nodes:
            node.start()

    def wait_ready(self, timeout: float = 60.0) -> None:
        """Return once every node answers a ping; raise if one exits or the time runs out."""
        deadline = time.monotonic() + timeout
        for master in self.master_nodes:
            self._wait_answering(master, deadline, timeout)
        for slave, master in self._slave_of.items():
            slave.role_args = ["slave", "--master-host", "127.0.0.1", "--master-port", str(master.port)]
            slave.start()
        for slave in self._slave_of:
            self._wait_answering(slave, deadline, timeout)
        self._supervisor.start()

    @staticmethod
    def _wait_answering(node: ManagedNode, deadline: float, timeout: float) -> None:
        """A node that exits at once gets new ports and another try: a free port can be taken
        (by any new connection's local port) between choosing it and the node binding it."""
        from yaddb.client import Client
        tries = START_TRIES
        while True:
            with Client(f"tcp://{node.address}", timeout=1.0, direct=False) as client:
                while node.proc.poll() is None:
                    try:
                        if client.ping():
                            return
                    except YaddbError:
                        pass
                    if time.monotonic() > deadline:
                        raise YaddbError(f"{node.name} did not answer within {timeout:g} s")
            tries -= 1
            if tries == 0:
                raise YaddbError(f"{node.name} exited with {node.proc.returncode}; see "
                                 f"{os.path.join(node.data_dir, 'node.log')}")
            log.warning("%s exited at start (%s); trying other ports", node.name, node.proc.returncode)
            node.port, node.pub_port = free_port(), free_port()
            node.start()

    def _supervise(self) -> None:
        while not self._stopping.wait(CHECK_EVERY_S):
            for node in self.nodes:
                code = node.proc.poll()
                if code is not None and not self._stopping.is_set():
                    node.restarts += 1
                    log.error("%s (port %d) exited with %s; restarting it (restart %d)",
                              node.name, node.port, code, node.restarts)
                    node.start()

    def stop(self, timeout: float = 30.0) -> None:
        self._stopping.set()
        if self._supervisor.is_alive():
            self._supervisor.join()
        for node in self.nodes:
            node.stop(timeout)
