"""The embedded default cluster: `run_router.py` with no --nodes starts its own nodes.

Each partition's master keeps its data in DATA_DIR/partition-N, and its slaves in
DATA_DIR/partition-N-slave-J, from one run to the next, whatever ports they get (a slave resumes
from its master's history id, not its address). DATA_DIR/cluster.json records the partition
count: keys are placed by `partition_for(key, N)`, so data written with one N is only found
with the same N, and another N is refused. Nodes are children of the supervisor room (fork and
exec at once, so no ZeroMQ context is ever inherited; each tied to this process by a pipe, so
none outlives it); one that dies is logged and restarted on the same port and directory.
"""
from __future__ import annotations

import json
import logging
import os
import sys
import time
from typing import Optional, Sequence

from yaddb.errors import BadRequest, YaddbError
from yaddb.transport.client_conn import Connection
from yaddb.transport.curve import CurvePair
from yaddb.supervisor import Child, DirectoryClaim, Supervisor, free_port, stop_all

log = logging.getLogger(__name__)

# Nodes run as `python -m yaddb.node` (run_node.py is not in an installed package), with this
# package first on their path whatever their working directory.
PACKAGE_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
RUN_NODE = ["-m", "yaddb.node"]
START_TRIES = 3
STOP_TIMEOUT_S = 1.5  # then SIGKILL: the logs hold every acknowledged write anyway
LAYOUT_FILE = "cluster.json"


class ClusterNode(Child):
    """One node of the embedded cluster: a run_node.py child whose ports may be chosen again."""

    def __init__(self, name: str, data_dir: str, node_args: Sequence[str],
                 role_args: Sequence[str]) -> None:
        self.data_dir = data_dir
        self.node_args = list(node_args)
        self.role_args = list(role_args)
        self.port = self.pub_port = 0
        env = {k: v for k, v in os.environ.items() if not k.startswith("YADDB_")}
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [PACKAGE_ROOT, env.get("PYTHONPATH")]))
        super().__init__(name, [], log_path=os.path.join(data_dir, "node.log"), env=env)
        self.new_ports()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def new_ports(self) -> None:
        self.port, self.pub_port = free_port(), free_port()

    def start(self) -> "ClusterNode":
        os.makedirs(self.data_dir, exist_ok=True)
        self.argv = [sys.executable, *RUN_NODE, "-p", str(self.port), "--pub-port", str(self.pub_port),
                     "--data-dir", self.data_dir, *self.node_args, *self.role_args]
        super().start()
        return self


class EmbeddedCluster:
    """`partitions` masters, each with `slaves` slaves, on free local ports, supervised."""

    def __init__(self, data_dir: str, partitions: int = 2, slaves: int = 1,
                 node_args: Optional[Sequence[str]] = None, keys_dir: Optional[str] = None,
                 slave_args: Sequence[str] = ()) -> None:
        """keys_dir: the cluster's CURVE keys, given to every node (none: plain sockets);
        slave_args: flags for slaves only, after node_args (the last of a repeated flag wins)."""
        if partitions < 1 or slaves < 0:
            raise BadRequest(f"the embedded cluster needs at least 1 partition and 0 or more "
                             f"slaves, not {partitions} and {slaves}")
        self.data_dir = data_dir
        self.partitions = partitions
        # how the launcher's own pings reach nodes that take CURVE peers only
        self._secure = None if keys_dir is None else CurvePair.from_directory(keys_dir).secure_client
        args = list(node_args or []) + ([] if keys_dir is None else ["--keys-dir", keys_dir])
        self.master_nodes = [ClusterNode(f"partition {i} master",
                                         os.path.join(data_dir, f"partition-{i}"), args, ["master"])
                             for i in range(partitions)]
        self._slave_of: dict[ClusterNode, ClusterNode] = {}
        for i, master in enumerate(self.master_nodes):
            for j in range(1, slaves + 1):
                slave = ClusterNode(f"partition {i} slave {j}",
                                    os.path.join(data_dir, f"partition-{i}-slave-{j}"),
                                    args + list(slave_args), [])
                self._slave_of[slave] = master
        self.nodes = self.master_nodes + list(self._slave_of)
        self._supervisor = Supervisor(self.nodes)
        self._claim: Optional[DirectoryClaim] = None

    @property
    def masters(self) -> list[str]:
        return [node.address for node in self.master_nodes]

    def start(self, timeout: float = 60.0) -> None:
        """Start every node and return once each answers a ping; raise if one cannot start.

        Slaves start once their masters answer, so the master ports they are given are sure.
        """
        self._claim = DirectoryClaim(self.data_dir)  # two routers on one --data-dir: refused
        self._check_layout()
        deadline = time.monotonic() + timeout
        for master in self.master_nodes:
            master.start()
        for master in self.master_nodes:
            self._wait_answering(master, deadline, timeout)
        for slave, master in self._slave_of.items():
            slave.role_args = ["slave", "--master-host", "127.0.0.1", "--master-port", str(master.port)]
            slave.start()
        for slave in self._slave_of:
            self._wait_answering(slave, deadline, timeout)
        self._supervisor.start()

    def terminate(self) -> None:
        """Ask every node to stop, without waiting (stop() waits)."""
        self._supervisor.stop_watching()
        for node in self.nodes:
            node.terminate()

    def stop(self, timeout: float = STOP_TIMEOUT_S) -> None:
        """Stop every node at once, each flushing its data; SIGKILL any still running after
        `timeout`."""
        self._supervisor.stop_watching()
        stop_all(self.nodes, timeout)
        if self._claim is not None:
            self._claim.release()
            self._claim = None

    def _check_layout(self) -> None:
        path = os.path.join(self.data_dir, LAYOUT_FILE)
        try:
            with open(path) as file:
                recorded = json.load(file)["partitions"]
        except FileNotFoundError:
            # Data from before the count was recorded was always written with 2 partitions.
            recorded = 2 if os.path.isdir(self.master_nodes[0].data_dir) else self.partitions
            with open(path, "w") as file:
                json.dump({"partitions": recorded}, file)
        except (ValueError, KeyError, TypeError) as exc:
            raise YaddbError(f"{path} is damaged ({exc}); it should read "
                             f'{{"partitions": N}} with the N this data was written with') from None
        if recorded != self.partitions:
            raise BadRequest(self._layout_message(recorded))

    def _layout_message(self, recorded: int) -> str:
        return (f"{self.data_dir} holds a cluster of {recorded} partitions, but --partitions is "
                f"{self.partitions}: keys are placed by the partition count, so the data would "
                f"not be found. Start with --partitions {recorded}, or use another --data-dir.")

    def _wait_answering(self, node: ClusterNode, deadline: float, timeout: float) -> None:
        """A node that exits at once gets new ports and another try: a free port can be taken
        (by any new connection's local port) between choosing it and the node binding it."""
        tries = START_TRIES
        while True:
            connection = Connection(f"tcp://{node.address}", 1.0, secure=self._secure)
            try:
                while node.running:
                    try:
                        if connection.call("ping", [], retries=2) == "PONG":
                            return
                    except YaddbError:
                        pass
                    if time.monotonic() > deadline:
                        raise YaddbError(f"{node.name} did not answer within {timeout:g} s")
            finally:
                connection.close()
            tries -= 1
            if tries == 0:
                raise YaddbError(f"{node.name} exited with {node.returncode}; see {node.log_path}")
            log.warning("%s exited at start (%s); trying other ports", node.name, node.returncode)
            node.new_ports()
            node.start()
