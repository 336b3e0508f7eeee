"""One partition for the chaos test: three nodes and a router, each on its own host of a
TestNetwork (netns.py), as real processes.

Every host has its own address, so every node uses the same ports: requests on NODE_PORT,
the write log on NODE_PORT + 1 (the node's default). Nodes bind their host's address with -H.
FIRST_MASTER starts as the master and the others as its slaves; the router is given the master
with --nodes and learns the slaves from it. Each process is a tied Child registered with the
test's `processes` fixture the moment it starts, and tagged so the leftover check finds it.

Roles move. When the router offers --failover-after (failover_supported()), it runs with
FAILOVER_AFTER_S (YADDB_CHAOS_FAILOVER_AFTER sets another; 0 turns failover off) and its
configuration in the test's directory, and promotes a slave when the master falls silent; so
which node is master is always asked of the router's /stats (roles()), never assumed. A node
restarts with the command line it first had: a node a router manages takes its role from its
own data dir, not from that command line.
"""
from __future__ import annotations

import functools
import os
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

NODES = ("n1", "n2", "n3")
FIRST_MASTER, ROUTER = "n1", "router"
HOSTS = (*NODES, ROUTER)
NODE_PORT, ROUTER_PORT, HTTP_PORT = 7000, 5555, 8080
STATS_TIMEOUT_S = 1.0
STOP_S = 30.0
FAILOVER_AFTER_S = 2.5  # the router's floor is above its 2 s lease; short keeps cycles short

Roles = tuple[str, tuple[str, ...]]  # (the master, its slaves)


@functools.lru_cache(maxsize=None)
def _help(script: str) -> str:
    return run_script(script, "--help", cwd=REPO_ROOT).stdout


def _insecure_if_offered(script: str) -> tuple[str, ...]:
    """("--insecure",) when the script's --help offers it. Protected mode (contract section 8)
    refuses to listen beyond loopback without keys; these hosts' addresses are not loopback,
    and the chaos suite tests faults, not CURVE, so it opts out wherever the flag exists."""
    return ("--insecure",) if "--insecure" in _help(script) else ()


def failover_supported() -> bool:
    """Whether the router has automatic failover (contract section 7): --failover-after."""
    return "--failover-after" in _help("run_router.py")


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
        self.down: set[str] = set()  # killed by the nemesis, not yet started again
        # None: no failover (the router lacks it, or YADDB_CHAOS_FAILOVER_AFTER=0 turns it off)
        self.router_failover: list[str] = []
        self.failover_after: Optional[float] = None
        if failover_supported():
            seconds = float(os.environ.get("YADDB_CHAOS_FAILOVER_AFTER") or FAILOVER_AFTER_S)
            self.router_failover = ["--failover-after", f"{seconds:g}"]
            self.failover_after = seconds or None

    # -- addresses and command lines ---------------------------------------------------------

    def address(self, host: str) -> str:
        port = ROUTER_PORT if host == ROUTER else NODE_PORT
        return f"{self.network.address(host)}:{port}"

    def endpoint(self, host: str) -> str:
        return f"tcp://{self.address(host)}"

    def node_at(self, address: object) -> Optional[str]:
        """The node at "host:port", or None for an address that is none of ours."""
        return next((node for node in NODES if self.address(node) == address), None)

    def data_dir(self, node: str) -> Path:
        return self.directory / node

    def _argv(self, host: str) -> list[str]:
        script = "run_router.py" if host == ROUTER else "run_node.py"
        bind = ["-H", self.network.address(host), *_insecure_if_offered(script)]
        if host == ROUTER:
            return [sys.executable, str(REPO_ROOT / script), *bind,
                    "--zmq-port", str(ROUTER_PORT), "-p", str(HTTP_PORT), *self.router_failover,
                    "--data-dir", str(self.directory / ROUTER),
                    "--nodes", self.address(FIRST_MASTER)]
        role = ["master"] if host == FIRST_MASTER else [
            "slave", "--master-host", self.network.address(FIRST_MASTER),
            "--master-port", str(NODE_PORT)]
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
        self.down.discard(host)
        return child

    def kill(self, host: str) -> None:
        """SIGKILL the whole process group and reap it."""
        self.paused.discard(host)
        self.down.add(host)
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

    def stats(self, host: str, timeout: float = STATS_TIMEOUT_S) -> Optional[dict]:
        """The host's stats straight from it, or None when it does not answer in time."""
        try:
            with Client(self.endpoint(host), timeout=timeout, read_retries=0) as client:
                return client.stats()
        except YaddbError:
            return None

    def _answers(self, host: str) -> bool:
        try:
            with Client(self.endpoint(host), timeout=STATS_TIMEOUT_S, read_retries=0) as client:
                return client.ping()
        except YaddbError:
            return False

    def partition(self) -> Optional[dict]:
        """The router's /stats of the partition, or None when the router does not answer."""
        stats = self.stats(ROUTER)
        partitions = (stats or {}).get("partitions")
        return partitions[0] if partitions else None

    def roles(self, all_known: bool = False) -> Optional[Roles]:
        """(master, slaves) as the router's /stats has them (without failover: as started);
        None when the router does not answer or names a master that is none of ours, or with
        all_known=True when its /stats does not list every other node as a slave."""
        partition = self.partition() if self.failover_after is not None or all_known else {}
        if partition is None:
            return None
        if self.failover_after is None:
            master = FIRST_MASTER
        else:
            master = self.node_at(partition.get("master"))
            if master is None:
                return None
        slaves = tuple(node for node in NODES if node != master)
        if all_known:
            listed = {self.node_at(s.get("address")) for s in partition.get("slaves") or ()
                      if isinstance(s, dict)}
            if not set(slaves) <= listed:
                return None
        return master, slaves

    def settled_roles(self, sequence: int = 0, exactly: bool = False) -> Optional[Roles]:
        """The roles, when the router lists every other node as a slave of its master, that
        master says it is master, every other node says it is its slave (one master in the
        partition), ready on its history with at least `sequence` applied (exactly=True:
        everything the master has); else None."""
        roles = self.roles(all_known=True)
        if roles is None:
            return None
        master, slaves = roles
        on_master = self.stats(master)
        if on_master is None or on_master.get("role") != "master":
            return None
        if exactly:
            sequence = on_master["sequence"]
        for slave in slaves:
            stats = self.stats(slave)
            state = stats and stats.get("replication")
            if not state or stats.get("role") != "slave" or not state["ready"] \
                    or state["history"] != on_master.get("history") \
                    or state["applied"] < sequence or (exactly and state["applied"] != sequence):
                return None
        return roles

    def slaves_caught_up(self, sequence: int, exactly: bool = False) -> bool:
        return self.settled_roles(sequence, exactly) is not None

    def check_running(self) -> None:
        """Fail at once when a process exited that no fault stopped."""
        for host, child in self.children.items():
            if child.returncode is not None and host not in self.down:
                raise ClusterError(f"{host} exited with {child.returncode}\n{self.logs()}")

    def wait_until(self, condition: Callable[[], bool], what: str, timeout: float) -> None:
        """Poll `condition` (each poll is bounded by its own calls' timeouts) until it holds;
        fail with what the router and each node say and every log's tail after `timeout`
        seconds, or at once if a process exits."""
        deadline = time.monotonic() + timeout
        while True:
            self.check_running()
            if condition():
                return
            if time.monotonic() > deadline:
                raise ClusterError(f"timed out after {timeout:g} s waiting for {what}\n"
                                   f"{self.describe()}\n{self.logs()}")
            time.sleep(0.05)  # between polls of other processes, not instead of a condition

    def wait_settled(self, history: History, healed_at: float, timeout: float) -> Roles:
        """After a heal: the router answers, one master (the router's) with every other node
        its slave, which has applied at least what that master had when first asked after the
        heal (asked again if the master changes meanwhile), and a write that began after the
        heal was acknowledged. Returns the roles."""
        floor: dict[str, int] = {}

        def settled() -> bool:
            roles = self.roles()
            if roles is None:
                return False
            if roles[0] not in floor:
                first = self.stats(roles[0])
                if first is None or "sequence" not in first:
                    return False
                floor[roles[0]] = first["sequence"]
            return self.settled_roles(floor[roles[0]]) == roles \
                and history.acknowledged_since(healed_at) > 0
        self.wait_until(settled, "the cluster to settle after the heal (one master, its "
                        "slaves caught up, a write acknowledged)", timeout)
        return self.roles()

    def describe(self) -> str:
        """What the router says of the partition and each node of itself, now."""
        lines = [f"router /stats partition: {self.partition()}"]
        for node in NODES:
            stats = self.stats(node) or {}
            lines.append(f"{node} ({self.address(node)}): " + str(
                {name: stats.get(name) for name in ("role", "epoch", "leased", "lease_s",
                                                    "sequence", "history", "replication")}))
        return "\n".join(lines)

    def logs(self, chars: int = 1500) -> str:
        return "\n".join(f"--- {host} log tail:\n{child.log_tail(chars)}"
                         for host, child in self.children.items())

    # -- the end ---------------------------------------------------------------------------

    def final_contents(self) -> tuple[dict[str, dict[bytes, bytes]], Roles]:
        """The roles as the router has them last, then stop every process (router first,
        then slaves, then master: each cleanly, with exit code 0) and read each node's whole
        content from its data dir."""
        self.resume_all()
        roles = self.roles()
        if roles is None:
            raise ClusterError(f"the router does not say which node is master\n{self.logs()}")
        master, slaves = roles
        for host in (ROUTER, *slaves, master):
            code = self.children[host].stop(STOP_S)
            if code != 0:
                raise ClusterError(f"{host} stopped with exit code {code}\n{self.logs()}")
        contents = {}
        for node in NODES:
            with Engine(str(self.data_dir(node))) as engine:
                contents[node] = {key: decode_item(blob).value for key, blob in engine.items()}
        return contents, roles
