"""The router's view of its nodes: a link to each partition's master and one to each slave it
learned of, each with what the router last heard; which of them a read goes to; and how the
router judges them alive (`Links`)."""
from __future__ import annotations

import logging
import time
from typing import Callable, Iterator, Optional

import zmq

from yaddb.transport.curve import SecureSocket
from yaddb.transport.protocol import encode_request
from yaddb.transport.sockets import client_socket, send_routed

log = logging.getLogger(__name__)

READ_PREFERENCES = ("master", "any")
INTERNAL = [b""]          # route of the router's own requests: no ROUTER peer id is ever empty


class NodeLink:
    """One DEALER to one node, and what the router knows of that node."""

    def __init__(self, partition: int, address: str, role: str, sock: zmq.Socket) -> None:
        self.partition = partition
        self.address = address
        self.role = role
        self.sock = sock
        self.alive = False
        self.last_reply = 0.0
        self.stats: Optional[dict] = None

    @property
    def name(self) -> str:
        return f"partition {self.partition} {self.role} {self.address}"

    def status(self) -> dict:
        stats = self.stats or {}
        out = {"address": self.address, "role": self.role, "alive": self.alive,
               "keys": stats.get("keys_estimate"), "sequence": stats.get("sequence"),
               "last_reply_s_ago": round(time.monotonic() - self.last_reply, 3) if self.last_reply else None}
        if "refused" in stats:  # with CURVE: peers and requests the node turned away
            out["refused"] = stats["refused"]
        if self.role == "slave":
            replication = stats.get("replication") or {}
            out.update(ready=replication.get("ready"), lag=replication.get("lag"),
                       applied=replication.get("applied"), master=replication.get("master"),
                       rolled_back=replication.get("rolled_back"))
        return out


class Partition:
    def __init__(self, index: int, master: NodeLink) -> None:
        self.index = index
        self.master = master
        self.slaves: dict[str, NodeLink] = {}
        self._turn = 0

    def links(self) -> list[NodeLink]:
        return [self.master, *self.slaves.values()]

    def serves_reads(self, link: NodeLink) -> bool:
        """The master while it answers; a slave while it answers and holds a whole copy of this
        master's data (same history id: not a slave since moved to another master)."""
        if not link.alive:
            return False
        if link is self.master:
            return True
        replication = (link.stats or {}).get("replication") or {}
        history = (self.master.stats or {}).get("history")
        return bool(replication.get("ready")) and history is not None \
            and replication.get("history") == history

    def reader(self, preference: str) -> NodeLink:
        """Where a read goes: the master, or with preference "any" each live, ready node in
        turn; the slaves alone when the master is down; the master when nothing answers (its
        error then says so)."""
        if preference == "master" and self.master.alive:
            return self.master
        candidates = [link for link in self.links() if self.serves_reads(link)]
        if not candidates:
            return self.master
        self._turn += 1
        return candidates[self._turn % len(candidates)]

    def other_reader(self, tried: tuple[NodeLink, ...]) -> Optional[NodeLink]:
        """A member that serves reads and was not tried yet for this read, or None."""
        for link in self.links():
            if link not in tried and self.serves_reads(link):
                return link
        return None

    def learn_slaves(self, listed: list, connect: Callable[[str], NodeLink]) -> list[NodeLink]:
        """Add a link for each slave the master lists that is new; returns the new links."""
        added = []
        for slave in listed:
            address = slave.get("address") if isinstance(slave, dict) else None
            if isinstance(address, str) and address not in self.slaves and address != self.master.address:
                self.slaves[address] = link = connect(address)
                added.append(link)
        return added

    def replace_master(self, address: str) -> None:
        """Make the slave at `address` the master; the old master is watched as a slave (it
        is told to replicate the new one when it answers again)."""
        old, self.master = self.master, self.slaves.pop(address)
        self.master.role, old.role = "master", "slave"
        self.slaves[old.address] = old

    def status(self) -> dict:
        master = self.master.status()
        return {"index": self.index, "master": self.master.address, "alive": self.master.alive,
                "role": (self.master.stats or {}).get("role"),
                "epoch": (self.master.stats or {}).get("epoch"), "keys": master["keys"],
                "sequence": master["sequence"], "last_reply_s_ago": master["last_reply_s_ago"],
                **({"refused": master["refused"]} if "refused" in master else {}),
                "slaves": [link.status() for link in self.slaves.values()]}


class Links:
    """Every DEALER the router holds to a node, by socket, registered with the router's poller;
    and the liveness rules: who answered lately, whose connection is gone."""

    def __init__(self, context: zmq.Context, poller: zmq.Poller, node_timeout: float,
                 secure: Optional[SecureSocket]) -> None:
        self.context = context
        self.poller = poller
        self.node_timeout = node_timeout
        self.secure = secure
        self.by_socket: dict[zmq.Socket, NodeLink] = {}

    def connect(self, index: int, address: str, role: str) -> NodeLink:
        sock = client_socket(self.context, f"tcp://{address}", self.secure)
        link = self.by_socket[sock] = NodeLink(index, address, role, sock)
        self.poller.register(sock, zmq.POLLIN)
        return link

    def close(self) -> None:
        for sock in self.by_socket:
            sock.close()

    def await_masters(self, partitions: list[Partition]) -> None:
        """Give every master up to the node timeout to connect, so the first requests after a
        start do not fail only because the connections were still being made."""
        deadline = time.monotonic() + self.node_timeout
        for partition in partitions:
            remaining = max(0, int((deadline - time.monotonic()) * 1000))
            if partition.master.sock.poll(remaining, zmq.POLLOUT):
                partition.master.alive = True
            else:
                log.warning("%s is not reachable yet", partition.master.name)

    def ask_status(self, now: float, request_ids: Iterator[int], every_s: float) -> None:
        """Ask every node for its stats; one silent for the node timeout past the last round
        is down. The answers come back as INTERNAL replies to the router's loop."""
        for link in self.by_socket.values():
            if link.last_reply and now - link.last_reply > self.node_timeout + every_s:
                link.alive = False
            try:  # no deadline of its own: a missing answer only ages last_reply
                send_routed(link.sock, INTERNAL, encode_request(next(request_ids), "stats", []))
            except zmq.Again:
                link.alive = False

    def check_slaves(self) -> None:
        """A slave whose connection is gone is down now, not at the next status round: one the
        supervisor restarts within a round would never be seen down, as a slave may get no
        request but those rounds. (IMMEDIATE: a DEALER with no connected peer is not writable;
        a full queue also counts, as when the router forwards.) A master is left to the
        requests it gets, which retry a read elsewhere when its send fails."""
        for link in self.by_socket.values():
            if link.alive and link.role == "slave" and not link.sock.poll(0, zmq.POLLOUT):
                link.alive = False
