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
        self.nodes = list(self.master_nodes)
        for i, master in enumerate(self.master_nodes):
            self.nodes += [ManagedNode(f"partition {i} slave {j}",
                                       os.path.join(data_dir, f"partition-{i}-slave-{j}"), args,
                                       ["slave", "--master-host", "127.0.0.1",
                                        "--master-port", str(master.port)])
                           for j in range(1, slaves + 1)]
        self._stopping = threading.Event()
        self._supervisor = threading.Thread(target=self._supervise, name="yaddb-supervisor", daemon=True)

    @property
    def masters(self) -> list[str]:
        return [node.address for node in self.master_nodes]

    def start(self) -> None:
        for node in self.nodes:
            node.start()

    def wait_ready(self, timeout: float = 60.0) -> None:
        """Return once every node answers a ping; raise if one exits or the time runs out."""
        from yaddb.client import Client
        deadline = time.monotonic() + timeout
        for node in self.nodes:
            with Client(f"tcp://{node.address}", timeout=1.0) as client:
                while True:
                    if node.proc.poll() is not None:
                        raise YaddbError(f"{node.name} exited with {node.proc.returncode}; see "
                                         f"{os.path.join(node.data_dir, 'node.log')}")
                    try:
                        if client.ping():
                            break
                    except YaddbError:
                        pass
                    if time.monotonic() > deadline:
                        raise YaddbError(f"{node.name} did not answer within {timeout:g} s")
        self._supervisor.start()

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
