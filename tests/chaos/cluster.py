"""One partition for the chaos test: a master, two slaves and a router, each on its own host of
a TestNetwork (netns.py), as real processes.

Every host has its own address, so every node uses the same ports: requests on NODE_PORT,
the write log on NODE_PORT + 1 (the node's default). Nodes bind their host's address with -H;
slaves follow the master by its address; the router is given the master with --nodes and
learns the slaves from it. Each process is a tied Child registered with the test's
`processes` fixture the moment it starts, and tagged so the leftover check finds it.
"""
from __future__ import annotations

import functools
import signal
import sys
import time
from pathlib import Path
from typing import Callable, Optional

from yaddb import Client
from yaddb.errors import YaddbError
from yaddb.item import decode_item
from yaddb.lsm import Engine
from yaddb.supervisor import Child
from tests import proc_table
from tests.chaos.history import History
from tests.chaos.netns import TestNetwork
from tests.helpers import REPO_ROOT, Processes, child_env, run_script

MASTER, SLAVES, ROUTER = "master", ("slave1", "slave2"), "router"
NODES = (MASTER, *SLAVES)
HOSTS = (*NODES, ROUTER)
NODE_PORT, ROUTER_PORT, HTTP_PORT = 7000, 5555, 8080
STATS_TIMEOUT_S = 1.0
STOP_S = 30.0


@functools.lru_cache(maxsize=None)
def _insecure_if_offered(script: str) -> tuple[str, ...]:
    """("--insecure",) when the script's --help offers it. Protected mode (contract section 8)
    refuses to listen beyond loopback without keys; these hosts' addresses are not loopback,
    and the chaos suite tests faults, not CURVE, so it opts out wherever the flag exists."""
    done = run_script(script, "--help", cwd=REPO_ROOT)
    return ("--insecure",) if "--insecure" in done.stdout else ()


class ClusterError(AssertionError):
    """The cluster did not reach a state in time: what was waited for, and the logs."""


class ChaosCluster:
    """The processes of one partition on the hosts of `network`."""

    def __init__(self, network: TestNetwork, processes: Processes, directory: Path) -> None:
        self.network = network
        self.processes = processes
        self.directory = directory
        self.children: dict[str, Child] = {}
        self.paused: set[str] = set()

    # -- addresses and command lines ---------------------------------------------------------

    def address(self, host: str) -> str:
        port = ROUTER_PORT if host == ROUTER else NODE_PORT
        return f"{self.network.address(host)}:{port}"

    def endpoint(self, host: str) -> str:
        return f"tcp://{self.address(host)}"

    def data_dir(self, node: str) -> Path:
        return self.directory / node

    def _argv(self, host: str) -> list[str]:
        script = "run_router.py" if host == ROUTER else "run_node.py"
        bind = ["-H", self.network.address(host), *_insecure_if_offered(script)]
        if host == ROUTER:
            return [sys.executable, str(REPO_ROOT / script), *bind,
                    "--zmq-port", str(ROUTER_PORT), "-p", str(HTTP_PORT),
                    "--data-dir", str(self.directory / ROUTER), "--nodes", self.address(MASTER)]
        role = ["master"] if host == MASTER else [
            "slave", "--master-host", self.network.address(MASTER), "--master-port", str(NODE_PORT)]
        return [sys.executable, str(REPO_ROOT / script), *bind, "-p", str(NODE_PORT),
                "--data-dir", str(self.data_dir(host)), *role]

    # -- processes ---------------------------------------------------------------------------

    def start(self) -> "ChaosCluster":
        """Every process, then wait until the router answers and both slaves are in sync."""
        for host in HOSTS:
            self.launch(host)
        self.wait_until(lambda: self._answers(ROUTER) and self.slaves_caught_up(0),
                        "the cluster to start", 60.0)
        return self

    def launch(self, host: str) -> Child:
        """Start the host's process (or start it again, on the same data dir)."""
        child = self.children.get(host)
        if child is None:
            env = child_env(**{proc_table.SESSION_VARIABLE: proc_table.session_tag(f"chaos-{host}")})
            child = self.network.spawn(host, host, self._argv(host), env=env,
                                       log_path=str(self.directory / f"{host}.log"),
                                       cwd=str(self.directory))
            self.children[host] = self.processes.add(child)
        else:
            child.start()  # the Child keeps its namespace prefix, log and environment
        return child

    def kill(self, host: str) -> None:
        """SIGKILL the whole process group and reap it."""
        self.paused.discard(host)
        if self.children[host].kill() is None:
            raise ClusterError(f"{host} survived SIGKILL\n{self.logs()}")

    def pause(self, host: str) -> None:
        self.children[host].signal(signal.SIGSTOP)
        self.paused.add(host)

    def resume(self, host: str) -> None:
        self.children[host].signal(signal.SIGCONT)
        self.paused.discard(host)

    def resume_all(self) -> None:
        for host in list(self.paused):
            self.resume(host)

    # -- looking at it -----------------------------------------------------------------------

    def stats(self, host: str) -> Optional[dict]:
        """The node's stats straight from it, or None when it does not answer in time."""
        try:
            with Client(self.endpoint(host), timeout=STATS_TIMEOUT_S, read_retries=0) as client:
                return client.stats()
        except YaddbError:
            return None

    def _answers(self, host: str) -> bool:
        try:
            with Client(self.endpoint(host), timeout=STATS_TIMEOUT_S, read_retries=0) as client:
                return client.ping()
        except YaddbError:
            return False

    def slaves_caught_up(self, sequence: int, exactly: bool = False) -> bool:
        """Both slaves ready, on the master's history, with at least `sequence` applied (with
        exactly=True: everything the master has)."""
        master = self.stats(MASTER)
        if master is None:
            return False
        if exactly:
            sequence = master["sequence"]
        for slave in SLAVES:
            stats = self.stats(slave)
            state = stats and stats.get("replication")
            if not state or not state["ready"] or state["history"] != master.get("history") \
                    or state["applied"] < sequence or (exactly and state["applied"] != sequence):
                return False
        return True

    def check_running(self) -> None:
        """Fail at once when a process exited that no fault stopped."""
        for host, child in self.children.items():
            if child.returncode is not None:
                raise ClusterError(f"{host} exited with {child.returncode}\n{self.logs()}")

    def wait_until(self, condition: Callable[[], bool], what: str, timeout: float) -> None:
        """Poll `condition` (each poll is bounded by its own calls' timeouts) until it holds;
        fail with every log's tail after `timeout` seconds, or at once if a process exits."""
        deadline = time.monotonic() + timeout
        while True:
            self.check_running()
            if condition():
                return
            if time.monotonic() > deadline:
                raise ClusterError(f"timed out after {timeout:g} s waiting for {what}\n{self.logs()}")
            time.sleep(0.05)  # between polls of other processes, not instead of a condition

    def wait_settled(self, history: History, healed_at: float, timeout: float) -> None:
        """After a heal: every node answers, both slaves have applied at least what the master
        had when they were first asked, and a write that began after the heal was acknowledged."""
        first = self.stats(MASTER)
        floor = [first["sequence"] if first else None]

        def settled() -> bool:
            if floor[0] is None:
                master = self.stats(MASTER)
                floor[0] = master and master["sequence"]
                return False
            return self.slaves_caught_up(floor[0]) and self._answers(ROUTER) \
                and history.acknowledged_since(healed_at) > 0
        self.wait_until(settled, "the cluster to settle after the heal", timeout)

    def logs(self, chars: int = 1500) -> str:
        return "\n".join(f"--- {host} log tail:\n{child.log_tail(chars)}"
                         for host, child in self.children.items())

    # -- the end ---------------------------------------------------------------------------

    def final_contents(self) -> dict[str, dict[bytes, bytes]]:
        """Stop every process (router first, then slaves, then master: each cleanly, with
        exit code 0) and read each node's whole content from its data dir."""
        self.resume_all()
        for host in (ROUTER, *SLAVES, MASTER):
            code = self.children[host].stop(STOP_S)
            if code != 0:
                raise ClusterError(f"{host} stopped with exit code {code}\n{self.logs()}")
        contents = {}
        for node in NODES:
            with Engine(str(self.data_dir(node))) as engine:
                contents[node] = {key: decode_item(blob).value for key, blob in engine.items()}
        return contents
