"""What a node does with a round of request frames: pure of sockets, so tests need none.

A round is every request waiting on the socket at once. Requests are applied in order; runs of
writes become one engine batch, and one log sync covers the whole round before any reply is
sent (group commit), so a slow fsync delays a round instead of timing requests out one by one.
A write with a write concern above 1 gets a `Held` reply instead, which the server sends once
`release` says enough members hold the write (replication/concern.py).
"""
from __future__ import annotations

import logging
import time
from collections import Counter
from typing import Any, Optional

from yaddb.errors import (BadMessage, BadRequest, NotApplied, NotMaster, NotPermitted, Unavailable,
                          YaddbError)
from yaddb.item import check_blob
from yaddb.limits import DEFAULT_MAX_VALUE_BYTES, DEFAULT_REPLICATION_TIMEOUT_S, check_key
from yaddb.lsm import Engine
from yaddb.replication.concern import Held, release
from yaddb.node.roles import RoleSwitch
from yaddb.replication.lease import Lease
from yaddb.replication.master import ReplicationSource
from yaddb.replication.slave import Replica
from yaddb.placement import parse_address
from yaddb.transport.curve import Refusals
from yaddb.transport.protocol import (CONTROL_OPS, PERMITTED, REPLICATION_OPS, Request, WRITES,
                                      decode_request, encode_error, encode_reply)

log = logging.getLogger(__name__)

NOT_MASTER = "I am not a master"
NO_REPLY = object()  # what a request that gets no reply (a slave's ack) answers


class _Round:
    """The writes of one round that wait for the engine, and the replies that wait for them."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.applied: list[tuple[bytes, Optional[bytes]]] = []  # every write that reached the engine
        self.first_seq = 0                                       # and the sequence of the first
        self.batch: list[tuple[bytes, Optional[bytes]]] = []
        # (reply index, request id, batch offset of its last entry, payload or None for its
        # seq, write concern)
        self.waiting: list[tuple[int, int, int, Any, Any]] = []
        # (reply index, request id, last seq, w) of applied writes whose concern is above 1
        self.concerned: list[tuple[int, int, int, Any]] = []
        self.wrote = False  # whether any write reached the engine this round

    def add(self, index: int, request_id: int, entries: list, payload: Any = None,
            w: Any = 1) -> None:
        self.batch.extend(entries)
        self.waiting.append((index, request_id, len(self.batch) - 1, payload, w))

    def commit(self, replies: list) -> None:
        """Give the waiting writes to the engine (not yet synced) and write their replies."""
        if not self.batch:
            return
        self.wrote = True
        try:
            last = self.engine.write_batch(self.batch, sync=False)
        except YaddbError as exc:
            for index, request_id, _, _, _ in self.waiting:
                replies[index] = encode_error(request_id, exc)
        else:
            first = last - len(self.batch) + 1
            if not self.applied:
                self.first_seq = first
            self.applied.extend(self.batch)  # one writer: the round's batches are consecutive
            for index, request_id, offset, payload, w in self.waiting:
                replies[index] = encode_reply(request_id, first + offset if payload is None else payload)
                if w != 1:
                    self.concerned.append((index, request_id, first + offset, w))
        self.batch = []
        self.waiting = []


class NodeHandler:
    """A master's handler has a ReplicationSource (it records and publishes its writes); a
    slave's has a Replica (it refuses writes, and reads until it has a whole copy)."""

    def __init__(self, engine: Engine, role: str = "master", max_value_bytes: int = DEFAULT_MAX_VALUE_BYTES,
                 source: Optional[ReplicationSource] = None,
                 replica: Optional[Replica] = None, *, lease: Optional[Lease] = None,
                 switch: Optional[RoleSwitch] = None,
                 replication_timeout: float = DEFAULT_REPLICATION_TIMEOUT_S,
                 min_slaves_to_write: int = 0, min_slaves_max_lag: float = 10.0,
                 refusals: Optional[Refusals] = None) -> None:
        """replication_timeout: how long a w>1 write waits for its members. A master refuses
        writes while fewer than min_slaves_to_write slaves were heard from within
        min_slaves_max_lag seconds (0: never). `refusals` counts requests refused to a peer's
        role (with CURVE), and the handshakes its sockets refused."""
        self.engine = engine
        self.lease = lease  # None: no fencing (a node in a test of its own)
        self.switch = switch  # None: the role is fixed (a node in a test of its own)
        self.replication_timeout = replication_timeout
        self.min_slaves_to_write = min_slaves_to_write
        self.min_slaves_max_lag = min_slaves_max_lag
        self.role = role
        self.max_value_bytes = max_value_bytes
        self.source = source
        self.replica = replica
        # For the PUB socket: (first sequence, entries) of each round's writes, once durable.
        self.outbox: list[tuple[int, list]] = []
        self.counts: Counter = Counter()
        self.refusals = refusals
        self.started = time.monotonic()

    def handle(self, frames: list[bytes], roles: Optional[list] = None) -> list:
        """One reply per request frame, in order, after the round's writes are durable: a
        frame, a Held for a write that waits on its concern, or None for a request that gets
        no reply (a slave's ack). `roles`, with CURVE: each frame's sender's role, which
        decides what it may ask for (protocol.PERMITTED)."""
        replies: list = [None] * len(frames)
        pending = _Round(self.engine)
        for index, frame in enumerate(frames):
            try:
                request = decode_request(frame)
            except BadMessage as exc:
                self.counts["bad_message"] += 1
                replies[index] = encode_error(exc.request_id, exc)
                continue
            self.counts[request.op] += 1
            if roles is not None and request.op not in PERMITTED.get(roles[index], ()):
                replies[index] = encode_error(request.request_id, self._refuse(request.op, roles[index]))
                continue
            try:
                if request.op in WRITES:
                    self._write(request, index, pending, replies)
                elif request.op in CONTROL_OPS:
                    replies[index] = encode_reply(request.request_id, self._control(request))
                elif request.op in REPLICATION_OPS:
                    answer = self._replication(request)
                    replies[index] = None if answer is NO_REPLY else \
                        encode_reply(request.request_id, answer)
                else:
                    pending.commit(replies)  # a read sees every write before it
                    replies[index] = encode_reply(request.request_id, self._read(request))
            except YaddbError as exc:
                self.counts["error"] += 1
                replies[index] = encode_error(request.request_id, exc)
            except Exception as exc:  # a bug must not take the node down; the client hears of it
                log.exception("request %s failed", request.op)
                self.counts["error"] += 1
                replies[index] = encode_error(request.request_id, exc)
        pending.commit(replies)
        if pending.wrote:
            try:
                self.engine.sync()
            except YaddbError as exc:
                # Nothing of this round may be acknowledged if its log did not reach the disk.
                return [encode_error(request_id_of(frame), exc) for frame in frames]
            if self.source is not None and pending.applied:
                self.source.record(pending.first_seq, pending.applied)
                self.outbox.append((pending.first_seq, pending.applied))
            now = time.monotonic()
            for index, request_id, seq, w in pending.concerned:
                held = Held(request_id, replies[index], seq, w, now + self.replication_timeout,
                            self.replication_timeout)
                replies[index] = self.release(held, now) or held
        return replies

    def _refuse(self, op: str, role: Optional[str]) -> NotPermitted:
        if self.refusals is not None:
            self.refusals.note("not_permitted", f"{op} from a {role} key")
        return NotPermitted(f"{op} is for the cluster's members (nodes and routers); this "
                            f"connection's key is a {role} key, which may use the data "
                            f"operations only")

    def release(self, held: Held, now: float) -> Optional[bytes]:
        """The frame to send for a held reply now, or None while it still waits."""
        return release(held, self.source, now, self.lease is not None and not self.lease.writable(now))

    def _write(self, request: Request, index: int, pending: _Round, replies: list) -> None:
        if self.role != "master":
            raise NotMaster(NOT_MASTER)
        if self.lease is not None:
            self.lease.check_writable()
        if self.min_slaves_to_write and self.source is not None:
            heard = self.source.slaves_heard_within(self.min_slaves_max_lag)
            if heard < self.min_slaves_to_write:
                raise NotApplied(
                    f"this master takes no writes: {heard} slave(s) confirmed within "
                    f"{self.min_slaves_max_lag:g} s, and --min-slaves-to-write is "
                    f"{self.min_slaves_to_write}; nothing was applied")
        op, args, request_id, w = request.op, request.args, request.request_id, request.w
        if w != 1 and self.source is None:
            raise BadRequest(f"w={w} needs a master that replicates; this node has no slaves")
        if op == "set":
            pending.add(index, request_id, [(check_key(args[0]), check_blob(args[1], self.max_value_bytes))],
                        w=w)
        elif op == "mset":
            entries = [(check_key(key), check_blob(blob, self.max_value_bytes)) for key, blob in args[0]]
            if entries:
                pending.add(index, request_id, entries, w=w)
            else:
                replies[index] = encode_reply(request_id, self.engine.sequence)
        else:  # del, mdel: whether each key existed needs every earlier write applied
            keys = [check_key(key) for key in (args if op == "del" else args[0])]
            pending.commit(replies)
            existed = [self.engine.get(key) is not None for key in keys]
            if keys:
                pending.add(index, request_id, [(key, None) for key in keys],
                            existed[0] if op == "del" else existed, w)
            else:
                replies[index] = encode_reply(request_id, [])

    def _control(self, request: Request) -> Any:
        """A router's command: a master's lease, or a role change (node/roles.py)."""
        if self.lease is None or self.switch is None:
            raise BadRequest("this node takes no control messages (started without a data dir)")
        if request.op == "promote":
            return self.switch.promote(self, request.args)
        if request.op == "replicaof":
            return self.switch.replicaof(self, request.args)
        if self.role != "master":
            raise NotMaster(f"{NOT_MASTER}: only a master holds a lease")
        return self.lease.grant(request.args)

    def become_master(self, source: ReplicationSource) -> None:
        """Take writes from now on (the server binds the write-log port it sees needed)."""
        self.role, self.source, self.replica = "master", source, None
        self.outbox.clear()

    def become_slave(self, replica: Replica) -> None:
        """Refuse writes from now on; the caller starts `replica` following its master."""
        self.role, self.source, self.replica = "slave", None, replica
        self.outbox.clear()

    def _replication(self, request: Request) -> Any:
        op, args = request.op, request.args
        if op == "follow":
            if self.replica is None:
                raise BadRequest("this node is a master; only a node started as `run_node.py "
                                 "slave` can follow another")
            master = args[0]
            parse_address(master)  # BadAddress says what is wrong
            self.replica.follow(master, replace_data=True)  # an operator's explicit choice
            return "Subscribed"
        if self.source is None:
            raise NotMaster(f"{NOT_MASTER}: replicate from this node's master instead")
        if op == "sync":
            return self.source.sync(args)
        if op == "chunk":
            return self.source.chunk(args)
        if op == "values":
            return self.source.values(args)
        if op == "ack":
            self.source.acked(args)
            return NO_REPLY
        return self.source.heard_from(args)  # "replica"

    def _read(self, request: Request) -> Any:
        op, args = request.op, request.args
        if self.replica is not None and not self.replica.ready and op in ("get", "mget"):
            raise Unavailable("this slave is still catching up with its master; read from the "
                              "master or another slave")
        if op == "get":  # the engine checks the key itself
            return self.engine.get(args[0])
        if op == "mget":
            get = self.engine.get
            return [get(key) for key in args[0]]
        if op == "ping":
            return "PONG"
        if op == "map":
            raise BadRequest("this is a storage node; ask a router for the partition map")
        return self.stats()  # "stats": decode_request admits no other op

    def stats(self) -> dict:
        engine = self.engine.stats()
        return {
            "role": self.role,
            "keys_estimate": self.engine.keys_estimate(),
            "keys_estimate_note": "an estimate: counts overwritten and deleted versions not yet merged away",
            "segments": engine["segments"],
            "memtable_bytes": engine["memtable_bytes"],
            "sequence": engine["sequence"],
            "ops": dict(self.counts),
            "uptime_s": round(time.monotonic() - self.started, 3),
            "fsync": engine["fsync"],
            "log_fsyncs": engine["log_fsyncs"],
            "disk_bytes": engine["disk_bytes"],
            "compactions": engine["compactions"],
            "flushes": engine["flushes"],
            **({} if self.source is None else {
                "history": self.source.history, "previous_history": self.source.previous_history,
                "switched_at": self.source.switched_at, "pub_port": self.source.pub_port,
                "slaves": self.source.slaves(), "backlog_from": self.source.backlog.oldest_seq,
                "snapshots_served": self.source.snapshots_served}),
            **({} if self.replica is None else {"replication": self.replica.status()}),
            **({} if self.lease is None else self.lease.status()),
            **({} if self.refusals is None else {"refused": self.refusals.counts()}),
        }


def request_id_of(frame: bytes) -> Optional[int]:
    """The request id in a frame, if one can be read, so an error reply can still match it."""
    try:
        return decode_request(frame).request_id
    except BadMessage as exc:
        return exc.request_id
