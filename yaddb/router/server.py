"""The router's event loop: one thread owns every socket.

Clients (native ones over TCP, the HTTP edge over inproc) send requests to a ROUTER front.
A single-key request is forwarded unchanged to its partition's master over a DEALER, behind the
client's routing id, which the node echoes back; the reply returns to the client unchanged.
Multi-key requests are split by partition and gathered. A request whose master is not
connected, or does not answer within the node timeout, gets an Unavailable error: the router
never leaves a client waiting, and a master that comes back is used again at once (ZeroMQ
reconnects by itself).

Reads (get, mget) go to the master, or with read preference "any" to the master and its live,
ready slaves in turn; when the master is down, to its slaves. A read whose node cannot be
reached or does not answer in time is sent again to another member that serves reads, so a
read fails only when no member of its partition answers. The router learns each master's
slaves from the master's stats (polled every STATUS_EVERY_S) and then polls them too.

With failover on, the loop also runs router/failover.py: it leases the masters, replaces a
silent one, and keeps every member in the role the configuration gives it; its requests to
nodes are the router's own commands, answered through callbacks.
"""
from __future__ import annotations

import itertools
import logging
import threading
import time
from typing import Callable, Optional

import zmq

from yaddb.limits import DEFAULT_MAX_VALUE_BYTES, DEFAULT_REPLICATION_TIMEOUT_S
from yaddb.errors import BadMessage, BadRequest, NotApplied, Unavailable, YaddbError
from yaddb.router.configuration import Configuration
from yaddb.router.failover import Failover, check_failover_after
from yaddb.router.gather import Gather
from yaddb.router.links import INTERNAL, READ_PREFERENCES, Links, NodeLink, Partition
from yaddb.placement import partition_for, split
from yaddb.transport.curve import Security
from yaddb.transport.protocol import (CONTROL_OPS, OPS, REPLICATION_OPS, Reply, decode_reply,
                                      decode_request, encode_error, encode_reply, encode_request)
from yaddb.transport.sockets import NOBLOCK, readable, recv_message, send_routed, server_socket

log = logging.getLogger(__name__)

TICK_S = 0.05             # how often expired requests are answered
STATUS_EVERY_S = 1.0      # how often each master is asked for its stats (liveness, keys)
MAX_DRAIN = 512           # messages taken from one socket before looking at the others
READS = frozenset({"get", "mget"})
Part = tuple[Gather, list[int]]                      # a partition's share of a batch
Read = tuple[int, str, bytes, tuple[NodeLink, ...]]  # partition, op, frame, members tried
Pending = tuple[float, NodeLink, Optional[Part], Optional[Read]]  # deadline, link, part, read


class RouterServer:
    def __init__(self, masters: list[str], front_endpoints: list[str], context: zmq.Context,
                 node_timeout: float = 1.0, max_value_bytes: int = DEFAULT_MAX_VALUE_BYTES,
                 read_preference: str = "any",
                 replication_timeout: float = DEFAULT_REPLICATION_TIMEOUT_S,
                 configuration: Optional[Configuration] = None,
                 failover_after: float = 0.0, security: Optional[Security] = None,
                 curve_front: bool = False, local_keys_dir: Optional[str] = None) -> None:
        """replication_timeout: how long masters may hold a write with w above 1; such a
        write's deadline here is the node timeout plus this. `configuration` (which node is
        master of what, at which epoch) wins over `masters` once it holds a failover;
        failover_after > 0 leases masters and replaces one silent that long. With `security`
        the router reaches nodes as a member, and with curve_front its front takes CURVE
        clients only (else plain ones: a front on loopback). `local_keys_dir`, for a front on
        loopback: where the cluster's keys are, told to clients in the map, so a client on this
        machine allowed to read a client key there routes straight to the masters."""
        self.configuration = configuration or Configuration(masters)
        self.security = security
        self.local_keys_dir = local_keys_dir
        self._secure_front = security.server() if security and curve_front else None
        masters = self.configuration.masters
        check_failover_after(failover_after)
        self.failover_after = failover_after
        self._failover: Optional[Failover] = None
        # request id -> (deadline, callback) of the router's own commands to nodes
        self._commands: dict[int, tuple[float, Callable[[Optional[Reply]], None]]] = {}
        self.replication_timeout = replication_timeout
        if read_preference not in READ_PREFERENCES:
            raise ValueError(f"read preference must be one of {READ_PREFERENCES}")
        self.read_preference = read_preference
        if not masters:
            raise ValueError("a router needs at least one partition master")
        self.masters = masters
        self.front_endpoints = front_endpoints
        self.context = context
        self.node_timeout = node_timeout
        self.max_value_bytes = max_value_bytes
        self.ready = threading.Event()
        self.start_error: Optional[str] = None  # set, with `ready`, when serve() cannot start
        self._stopping = threading.Event()
        self._partitions: list[Partition] = []
        self._poller = zmq.Poller()
        self._links = Links(context, self._poller, node_timeout,
                            security and security.as_member.secure_client)
        # (route id, request id) -> (deadline, node link, gather part or None, read or None);
        # insertion order is deadline order, since every request, and every retry of a read,
        # gets the same timeout from when it is sent. Writes a master may hold for their
        # write concern get a longer one, so they wait in a dict of their own.
        self._pending: dict[tuple[bytes, int], Pending] = {}
        self._pending_held: dict[tuple[bytes, int], Pending] = {}
        self._ids = itertools.count(1)
        self.counts: dict[str, int] = {}
        self.started = time.monotonic()

    # ---- for other threads ---------------------------------------------------------------

    def stop(self) -> None:
        self._stopping.set()

    def partition_map(self) -> dict:
        """What a client needs to route by itself: the masters in partition order, and how
        long a master may take (past it, the router would answer 503)."""
        partitions = list(self._partitions)  # the masters now, once the loop has them
        masters = [p.master.address for p in partitions] if partitions else list(self.masters)
        return {"masters": masters, "node_timeout_s": self.node_timeout,
                "replication_timeout_s": self.replication_timeout,
                "epochs": [p.epoch for p in self.configuration.partitions],
                "keys_required": self.security is not None,
                **({} if self.local_keys_dir is None else {"keys_dir": self.local_keys_dir})}

    def status(self) -> dict:
        """The router's view of its partitions (read from other threads; a snapshot)."""
        failover = self._failover
        return {"partitions": [{**p.status(), **(failover.status(p.index) if failover else {})}
                               for p in list(self._partitions)],
                "failover_after_s": self.failover_after,
                "requests": dict(self.counts), "node_timeout_s": self.node_timeout,
                "read_preference": self.read_preference,
                **({} if self.security is None else {"refused": self.security.refusals.counts()}),
                "uptime_s": round(time.monotonic() - self.started, 3)}

    # ---- the loop ------------------------------------------------------------------------

    def serve(self) -> None:
        front = None
        try:
            front = server_socket(self.context, self.front_endpoints[0], self.max_value_bytes,
                                  self._secure_front)
            for endpoint in self.front_endpoints[1:]:
                front.bind(endpoint)
        except zmq.ZMQError as exc:  # said by whoever waits on `ready`, at once
            if front is not None:
                front.close()
            self.start_error = f"cannot serve on {', '.join(self.front_endpoints)}: {exc}"
            self.ready.set()
            return
        poller = self._poller
        poller.register(front, zmq.POLLIN)
        self._partitions = [Partition(index, self._links.connect(index, address, "master"))
                            for index, address in enumerate(self.masters)]  # whole, at once
        for partition, config in zip(self._partitions, self.configuration.partitions):
            partition.learn_slaves([{"address": a} for a in config.members],  # stored ones
                                   lambda address, i=partition.index: self._links.connect(i, address, "slave"))
        next_status = next_tick = 0.0
        if self.failover_after > 0:
            self._failover = Failover(self.configuration, self._partitions, self._command,
                                      self.failover_after, self.node_timeout)
        try:
            self._links.await_masters(self._partitions)
            if self._failover is not None:
                self._await_leases(front)
            self.ready.set()
            while not self._stopping.is_set():
                for sock, _ in poller.poll(int(TICK_S * 1000)):
                    if sock is front:
                        self._drain(front, lambda message: self._from_client(front, message))
                    else:
                        link = self._links.by_socket[sock]
                        self._drain(sock, lambda message: self._from_node(front, link, message))
                now = time.monotonic()
                self._expire(front, now)
                if now >= next_tick:  # not on every turn:
                    self._links.check_slaves()
                    if self._failover is not None:
                        self._failover.tick(now)       # leases run in half-seconds
                    next_tick = now + TICK_S
                if now >= next_status:
                    self._links.ask_status(now, self._ids, STATUS_EVERY_S)
                    next_status = now + STATUS_EVERY_S
        finally:
            front.close()
            self._links.close()

    def _await_leases(self, front: zmq.Socket) -> None:
        """Lease every master that answers before taking requests, so that the first writes
        after a start are not refused for want of a lease."""
        deadline = time.monotonic() + self.node_timeout
        while not self._failover.leased() and time.monotonic() < deadline:
            self._failover.tick(time.monotonic())
            for sock, _ in self._poller.poll(int(TICK_S * 1000)):
                if sock is not front:
                    link = self._links.by_socket[sock]
                    self._drain(sock, lambda message: self._from_node(front, link, message))
            self._expire(front, time.monotonic())

    def _command(self, link: NodeLink, op: str, args: list,
                 answered: Callable[[Optional[Reply]], None]) -> None:
        """Send the router's own request to a node; `answered` gets its reply, or None when
        it could not be sent or no reply came within the node timeout."""
        request_id = next(self._ids)
        try:
            send_routed(link.sock, INTERNAL, encode_request(request_id, op, args))
        except zmq.Again:
            answered(None)
            return
        self._commands[request_id] = (time.monotonic() + self.node_timeout, answered)

    def _drain(self, sock: zmq.Socket, handle) -> None:
        for _ in range(MAX_DRAIN):
            handle(recv_message(sock, NOBLOCK))
            if not readable(sock):
                return

    def _reply(self, front: zmq.Socket, route: list[bytes], frame: bytes) -> None:
        try:
            send_routed(front, route, frame)
        except zmq.ZMQError as exc:  # the client is gone, or not reading
            log.debug("reply to a departed client dropped: %s", exc)

    def _from_client(self, front: zmq.Socket, message: list[bytes]) -> None:
        route, frame = message[:-1], message[-1]
        try:
            request = decode_request(frame)
        except BadMessage as exc:
            self._count("bad_message")
            self._reply(front, route, encode_error(exc.request_id, exc))
            return
        op = request.op
        self._count(op)
        if op == "ping":
            self._reply(front, route, encode_reply(request.request_id, "PONG"))
        elif op == "stats":
            self._reply(front, route, encode_reply(request.request_id, self.status()))
        elif op == "map":
            self._reply(front, route, encode_reply(request.request_id, self.partition_map()))
        elif op in REPLICATION_OPS or op in CONTROL_OPS:
            self._reply(front, route, encode_error(request.request_id, BadRequest(
                f"{op} is for nodes; send it to a node, not to the router")))
        elif OPS[op] in ("k", "ki"):  # get, del, set: the frame goes on as it came
            index = partition_for(request.args[0], len(self._partitions))
            self._forward(front, route, request.request_id, index, op, frame, None,
                          held_for=self._held_for(request.w))
        else:
            self._scatter(front, route, request.request_id, op, request.args[0], request.w)

    def _held_for(self, w: object) -> float:
        """How long a master may hold a write of concern `w` before it answers."""
        return 0.0 if w == 1 else self.replication_timeout

    def _scatter(self, front: zmq.Socket, route: list[bytes], request_id: int, op: str,
                 entries: list, w: object = 1) -> None:
        parts = split(op, entries, len(self._partitions))
        if not parts:
            self._reply(front, route, encode_reply(request_id, True if op == "mset" else []))
            return
        gather = Gather(route, request_id, op, len(entries), len(parts))
        for index, (positions, subset) in parts.items():
            sub_id = next(self._ids)
            args = [subset] if w == 1 else [subset, w]
            self._forward(front, INTERNAL, sub_id, index, op, encode_request(sub_id, op, args),
                          (gather, positions), held_for=self._held_for(w))
            if gather.done:
                return

    def _forward(self, front: zmq.Socket, route: list[bytes], request_id: int, index: int,
                 op: str, frame: bytes, part: Optional[Part],
                 tried: Optional[tuple[NodeLink, ...]] = None, held_for: float = 0.0) -> None:
        """Send a request to its partition: a write to the master, a read to a reader (or,
        when `tried` is given, to a member not tried yet). `held_for`: how much longer than
        the node timeout the node may take (a write waiting on its write concern)."""
        partition = self._partitions[index]
        read = None
        if op in READS:
            link = partition.reader(self.read_preference) if tried is None \
                else partition.other_reader(tried)
            read = (index, op, frame, (tried or ()) + (link,))
        else:
            link = partition.master
        try:
            send_routed(link.sock, route, frame)
        except zmq.Again:  # not connected (IMMEDIATE): say so now rather than after a timeout
            link.alive = False
            if not self._read_elsewhere(front, route, request_id, part, read):
                self._unavailable(front, route, request_id, part, f"{link.name} is not reachable"
                                  + self._what_still_works(partition, op), sent=read is not None)
            return
        pending = self._pending_held if held_for else self._pending
        pending[(route[0], request_id)] = (time.monotonic() + self.node_timeout + held_for,
                                           link, part, read)

    def _read_elsewhere(self, front: zmq.Socket, route: list[bytes], request_id: int,
                        part: Optional[Part], read: Optional[Read]) -> bool:
        """Send a read that failed on one member to another that serves reads; False when
        it is not a read, or every such member was tried."""
        if read is None:
            return False
        index, op, frame, tried = read
        if self._partitions[index].other_reader(tried) is None:
            return False
        self._count("read_retries")
        self._forward(front, route, request_id, index, op, frame, part, tried)
        return True

    @staticmethod
    def _what_still_works(partition: Partition, op: str) -> str:
        if op in READS or not any(partition.serves_reads(link) for link in partition.slaves.values()):
            return ""
        return "; its slaves still serve reads, writes wait for the master to come back"

    def _from_node(self, front: zmq.Socket, link: NodeLink, message: list[bytes]) -> None:
        route, frame = message[:-1], message[-1]
        link.alive = True
        link.last_reply = time.monotonic()
        try:
            reply = decode_reply(frame)
        except BadMessage:
            log.warning("%s sent an undecodable reply", link.name)
            return
        if route == INTERNAL and reply.request_id in self._commands:
            self._commands.pop(reply.request_id)[1](reply)
            return
        entry = None
        if route:
            key = (route[0], reply.request_id)
            entry = self._pending.pop(key, None) or self._pending_held.pop(key, None)
        if entry is None:
            if route == INTERNAL and reply.status == 0 and isinstance(reply.payload, dict) \
                    and "role" in reply.payload:  # stats, not a late answer to a command
                self._status_from(link, reply.payload)
            return  # else a reply that came after its request was answered as timed out
        part = entry[2]
        if part is None:
            self._reply(front, route, frame)
        else:
            gather, positions = part
            answer = gather.add(positions, reply)
            if answer is not None:
                self._reply(front, gather.route, answer)

    def _expire(self, front: zmq.Socket, now: float) -> None:
        for pending in (self._pending, self._pending_held):
            self._expire_from(front, pending, now)
        while self._commands:  # in deadline order, as for requests
            request_id, (deadline, answered) = next(iter(self._commands.items()))
            if deadline > now:
                break
            del self._commands[request_id]
            answered(None)

    def _expire_from(self, front: zmq.Socket, pending: dict, now: float) -> None:
        while pending:
            key = next(iter(pending))
            deadline, link, part, read = pending[key]
            if deadline > now:
                return
            del pending[key]
            link.alive = False
            route = INTERNAL if part is not None else [key[0]]
            if not self._read_elsewhere(front, route, key[1], part, read):
                self._unavailable(front, route, key[1], part,
                                  f"{link.name} did not answer within {self.node_timeout:g} s")

    def _unavailable(self, front: zmq.Socket, route: list[bytes], request_id: int,
                     part: Optional[Part], what: str, sent: bool = True) -> None:
        """503 for a request that failed; NotApplied for a write that was never sent anywhere
        (a batch never says so: other partitions' parts may be applied)."""
        self._count("unavailable")
        error: YaddbError = Unavailable(what) if sent or part is not None \
            else NotApplied(f"{what}; nothing was applied")
        if part is None:
            self._reply(front, route, encode_error(request_id, error))
        else:
            answer = part[0].fail(error)
            if answer is not None:
                self._reply(front, part[0].route, answer)

    def _status_from(self, link: NodeLink, stats: dict) -> None:
        link.stats = stats
        if link.role == "master" and isinstance(stats.get("slaves"), list):
            partition = self._partitions[link.partition]
            added = partition.learn_slaves(stats["slaves"],
                                           lambda address: self._links.connect(link.partition, address, "slave"))
            for slave in added:
                log.info("%s learned from its master", slave.name)
            if added:
                self.configuration.note_members(link.partition, list(partition.slaves))

    def _count(self, what: str) -> None:
        self.counts[what] = self.counts.get(what, 0) + 1
