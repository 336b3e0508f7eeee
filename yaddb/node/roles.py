"""A node's role changes at a router's command (docs/failover.md): a slave promoted to master,
a master (or slave) told to replicate another master, and what a node remembers of its role
across restarts once a router manages it.

    promote   [epoch, [slave addresses]]  -> {"epoch", "history", "sequence"}
    replicaof [epoch, "host:port"]        -> {"epoch", "master"}

Both check the epoch first (an older one is refused, a newer one is stored before anything
else is done), so a command delayed in the network cannot undo a newer configuration. Both
are idempotent: the router repeats them until the node reports the role it was given.
"""
from __future__ import annotations

import logging
from typing import Any, Optional, Protocol

import zmq

from yaddb.errors import BadRequest
from yaddb.lsm import Engine
from yaddb.placement import parse_address
from yaddb.replication.lease import Lease
from yaddb.replication.master import ReplicationSource
from yaddb.replication.slave import Replica
from yaddb.replication.state import ReplicationState, load_state, new_history, save_state
from yaddb.transport.sockets import Secure

log = logging.getLogger(__name__)


class RoleHolder(Protocol):
    """What a role change acts on: the node's request handler."""
    engine: Engine
    lease: Lease
    source: Optional[ReplicationSource]
    replica: Optional[Replica]

    def become_master(self, source: ReplicationSource) -> None: ...

    def become_slave(self, replica: Replica) -> None: ...


def master_lineage(data_dir: str, sequence: int) -> ReplicationState:
    """A new history id for a master's start, continuing the last one at `sequence` (the
    writes the data dir holds); a slave's data dir starts a line of its own (its numbering is
    its own, not its master's)."""
    state = load_state(data_dir)
    previous = state.history if state.master is None else None
    lineage = ReplicationState(new_history(), previous_history=previous,
                               switched_at=sequence if previous else 0,
                               forked_from=state.forked_from if state.master is None else None)
    save_state(data_dir, lineage)
    return lineage


def managed_role(lease: Lease, data_dir: str) -> Optional[tuple[str, Optional[str]]]:
    """("master", None) or ("slave", master) when a router manages this node (its last
    command wins over the command line's role), else None."""
    if not lease.managed:
        return None
    state = load_state(data_dir)
    if state.master is None and state.former is None:
        return "master", None
    return "slave", state.master  # a pending rollback (former) waits for the router's word


class RoleSwitch:
    """What a node needs to change its role in place: its files, ports and context."""

    def __init__(self, data_dir: str, address: str, pub_port: int, backlog_bytes: int,
                 context: zmq.Context, secure: Secure = None) -> None:
        """address: "host:port" this node is reached at (what a slave tells its master);
        secure: its keys as a slave (transport/curve.py)."""
        self.data_dir = data_dir
        self.address = address
        self.pub_port = pub_port
        self.backlog_bytes = backlog_bytes
        self.context = context
        self.secure = secure

    def promote(self, handler: RoleHolder, args: list) -> dict[str, Any]:
        """Make this node its partition's master, with a new history that remembers where it
        forked from its old master's; writes wait for the router's first lease."""
        epoch, slaves = args
        if not isinstance(slaves, list) or not all(isinstance(s, str) for s in slaves):
            raise BadRequest("promote takes [epoch, [slave addresses]]")
        lease = handler.lease
        lease.check_epoch(epoch, "promote")
        lease.manage()
        if handler.source is None:
            replica = handler.replica
            state = replica.state
            if state.master is not None and not replica.ready:
                raise BadRequest("this slave holds no whole copy of its master's data yet; "
                                 "promote another, or wait until it is ready")
            replica.stop()
            handler.engine.sync(force=True)  # a slave applies without syncing each batch
            if state.master is None:  # a master before (restarted as a slave): its line goes on
                lineage = master_lineage(self.data_dir, handler.engine.sequence)
            else:
                lineage = self._fork(handler.engine, state)
            source = ReplicationSource(handler.engine, lineage, self.backlog_bytes, self.pub_port)
            lease.revoke()
            handler.become_master(source)
            log.warning("promoted to master at epoch %d (history %s, forked from %s, the old "
                        "master's log %s)", epoch, lineage.history, lineage.forked_from,
                        "goes on" if lineage.previous_history else "does not go on: its slaves "
                        "take a snapshot")
        handler.source.expect_slaves(slaves, self.address)
        return {"epoch": lease.epoch, "history": handler.source.history,
                "sequence": handler.engine.sequence}

    def _fork(self, engine: Engine, state: ReplicationState) -> ReplicationState:
        """A new history for a promoted slave that held its master's writes up to
        `state.applied`. When its own numbers are not past that (it numbered its writes as its
        master did), its next write is applied + 1 and its old master's slaves go on from its
        log (the old history is its previous one, as after a master's restart)."""
        applied = state.applied
        continues = engine.sequence <= applied
        if continues:
            engine.advance_sequence(applied)
        lineage = ReplicationState(new_history(), previous_history=state.history if continues else None,
                                   switched_at=applied if continues else 0,
                                   forked_from=[state.history, applied])
        save_state(self.data_dir, lineage)
        return lineage

    def replicaof(self, handler: RoleHolder, args: list) -> dict[str, Any]:
        """Replicate `master` from now on. A master steps down first: its writes past what
        the new master holds go to DATA_DIR/rollback (replication/rollback.py)."""
        epoch, master = args
        if not isinstance(master, str):
            raise BadRequest("replicaof takes [epoch, \"host:port\"]")
        parse_address(master)  # BadAddress says what is wrong
        if master == self.address:
            raise BadRequest("a node cannot replicate itself")
        lease = handler.lease
        lease.check_epoch(epoch, "replicaof")
        lease.manage()
        if handler.source is not None:
            source = handler.source
            lease.revoke()
            former = ReplicationState(source.history, previous_history=source.previous_history,
                                      switched_at=source.switched_at)
            handler.become_slave(Replica(handler.engine, self.data_dir, self.address,
                                         self.context, former=former, epoch=epoch,
                                         secure=self.secure))
            log.warning("stepped down at epoch %d: now a slave of %s", epoch, master)
        elif handler.replica.master == master:
            return {"epoch": lease.epoch, "master": master}  # already so: a repeated command
        handler.replica.follow(master, replace_data=True)
        return {"epoch": lease.epoch, "master": master}
