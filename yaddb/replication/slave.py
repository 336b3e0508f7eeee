"""The slave's side of replication: a thread that keeps the node's engine a copy of its master's.

Each session follows the zguide's Clone pattern: subscribe to the master's PUB socket first and
wait for a message on it (so no update published from then on can be missed: the slow-joiner
gap), then catch up over request-reply (the writes after what this slave holds, from the
master's backlog, or a full snapshot in chunks), then apply the queued and new updates in
sequence order, skipping what it already has. A sequence gap (a dropped update, or a heartbeat
ahead of what arrived) means catching up again from the last applied write; a master silent
for SILENCE_S, or one whose history changed, ends the session and a new one starts.

A master turned into a slave (`former`: its lineage as a master) asks with no history, so it
always takes a snapshot: its sequence numbers are not the new master's. Before the snapshot
replaces its data, the writes it took that the new master never got go to DATA_DIR/rollback/
(yaddb.replication.rollback): exactly, from its engine's logs, when they reach back to the
fork; else each key that differs from the snapshot, one file per chunk that has any.
"""
from __future__ import annotations

import logging
import threading
import time
from dataclasses import replace
from typing import Optional

import zmq

from yaddb.errors import BadMessage, YaddbError
from yaddb.lsm import Engine
from yaddb.placement import host_of
from yaddb.replication import rollback
from yaddb.replication.messages import HEARTBEAT_S, check_entries, decode_published
from yaddb.replication.state import ReplicationState, load_state, save_state
from yaddb.progress import Progress
from yaddb.transport.client_conn import Connection
from yaddb.transport.sockets import NOBLOCK, Secure, readable, subscriber_socket

log = logging.getLogger(__name__)

REQUEST_TIMEOUT_S = 5.0
CATCH_UP_BYTES = 1 << 20    # per sync answer or snapshot chunk
SILENCE_S = 8 * HEARTBEAT_S  # no message for this long: the master is gone
REPORT_EVERY_S = 0.5        # the slave's heartbeat to its master, and how often its position is saved
RESTORE_KEYS = 1000          # keys asked per `values` call when rejoining
DRAIN_MAX = 256             # updates applied between looks at the clock


class SessionOver(Exception):
    """This session cannot go on (master gone or changed); a new one starts after a pause."""


class Replica:
    """Keeps `engine` a copy of one master's data, from a thread of its own."""

    def __init__(self, engine: Engine, data_dir: str, address: str,
                 context: Optional[zmq.Context] = None, *,
                 former: Optional[ReplicationState] = None, epoch: int = 0,
                 secure: Secure = None) -> None:
        """`secure` sets this slave's keys on its sockets to the master. `former`: this node's lineage as a master, when a master becomes this slave (then
        `epoch` names its rollback files). A former lineage saved earlier and not yet rolled
        back (a crash came first) is taken from the state file."""
        self.engine = engine
        self.data_dir = data_dir
        self.address = address      # "host:port" this node serves on: how its master lists it
        self._context = context or zmq.Context.instance()
        self._secure = secure
        self.epoch = epoch
        self.state = load_state(data_dir)
        self._recover_position()
        if former is not None:
            self._demote(former)
        self.rolled_back = rollback.count(data_dir)
        # Reads are served once the data is a whole copy as of some point (stale at worst),
        # never during a first or full sync.
        self.ready = self.state.history is not None and self.state.master is not None
        self.master_seq = 0
        self.counts = {"full_syncs": 0, "catch_ups": 0, "gaps": 0, "sessions": 0}
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None
        self._replace_data = False
        self._acked = -1  # the last position told to the master

    def _demote(self, former: ReplicationState) -> None:
        """Start as a slave with no history (so the first sync is a snapshot) and remember
        `former` on disk until its rollback is written."""
        pending = self.state.former
        if pending is not None and pending.history != former.history:
            log.warning("writes of history %s past where a new master forked were never kept "
                        "aside (a crash came first); looking for those of history %s instead",
                        pending.history, former.history)
        self.state = ReplicationState(former=replace(former, former=None))
        save_state(self.data_dir, self.state)

    @property
    def master(self) -> Optional[str]:
        return self.state.master

    def follow(self, master: str, replace_data: bool = False) -> None:
        """Replicate `master` ("host:port") from now on; returns once the thread has started.

        Without replace_data, data this slave holds is never replaced by a master with another
        history and fewer writes (one that lost its data: its snapshot would wipe the last
        copy); the slave refuses, says so in its log, and keeps it. `POST /subscribe` sets it."""
        self.stop()
        self._replace_data = replace_data
        if master != self.state.master:
            # The history id, not the address, says whether the data can resume: the same
            # master on a new port continues; another master's data means a full snapshot.
            self.state.master = master
            self.ready = False
            save_state(self.data_dir, self.state)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="yaddb-replica", daemon=True)
        self._thread.start()
        log.info("replicating %s", master)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def status(self) -> dict:
        return {"master": self.state.master, "history": self.state.history,
                "applied": self.state.applied, "master_seq": self.master_seq,
                "lag": max(0, self.master_seq - self.state.applied), "ready": self.ready,
                "rolled_back": dict(self.rolled_back), **self.counts}

    # -- the thread ----------------------------------------------------------------------------

    def _run(self) -> None:
        pause = 0.1
        while not self._stop.is_set():
            try:
                self._session()
                pause = 0.1
            except (SessionOver, YaddbError, zmq.ZMQError) as exc:
                if self._stop.is_set():
                    break  # stopping cut the session short: nothing to report
                log.warning("replication of %s interrupted: %s; retrying in %.1f s",
                            self.state.master, exc, pause)
            except Exception:  # a bug must not end replication for good
                log.exception("replication of %s failed", self.state.master)
            self._stop.wait(pause)
            pause = min(pause * 2, 2.0)

    def _session(self) -> None:
        self.counts["sessions"] += 1
        self._acked = -1  # a new connection: tell the master where this slave is
        master = self.state.master
        conn = Connection(f"tcp://{master}", REQUEST_TIMEOUT_S, self._context,
                          interrupt=self._stop, secure=self._secure)  # stopping never waits on the master
        sub = None
        try:
            info = conn.call("replica", [self.address, self.state.history, self.state.applied,
                                         self.ready])
            host = host_of(master)
            sub = subscriber_socket(self._context, f"tcp://{host}:{info['pub_port']}", self._secure)
            # Subscribed once anything arrives: the master publishes at least a heartbeat
            # every HEARTBEAT_S. What queues from here on is applied after the catch-up.
            if not self._heard(sub, SILENCE_S):
                raise SessionOver(f"nothing published by {master} within {SILENCE_S:g} s")
            if self.state.former is not None:
                self._rejoin(conn, info.get("forked_from"))
            self._catch_up(conn)
            self._stream(conn, sub)
        finally:
            if sub is not None:
                sub.close()
            conn.close()

    def _heard(self, sub: zmq.Socket, timeout_s: float) -> bool:
        """Whether `sub` has a message within `timeout_s`; False at once when stopping."""
        deadline = time.monotonic() + timeout_s
        while not self._stop.is_set() and time.monotonic() < deadline:
            if sub.poll(int(HEARTBEAT_S * 1000)):
                return True
        return False

    def _stream(self, conn: Connection, sub: zmq.Socket) -> None:
        heard = reported = time.monotonic()
        while not self._stop.is_set():
            if sub.poll(int(HEARTBEAT_S * 1000)):
                ack_wanted = False
                for _ in range(DRAIN_MAX):  # a receive that raises zmq.Again costs more
                    ack_wanted |= self._apply_published(conn, sub.recv(NOBLOCK))
                    if not readable(sub):
                        break
                if ack_wanted:
                    self._ack(conn)
                heard = time.monotonic()
            now = time.monotonic()
            if now - heard > SILENCE_S:
                raise SessionOver(f"nothing from {self.state.master} for {SILENCE_S:g} s")
            if now - reported >= REPORT_EVERY_S:
                self._report(conn)
                reported = now

    def _apply_published(self, conn: Connection, frame: bytes) -> bool:
        """Apply what the master published; True if it asks for an ack at once."""
        try:
            message = decode_published(frame)
        except BadMessage as exc:
            log.warning("ignoring a published message: %s", exc)
            return False
        if message.history != self.state.history:
            raise SessionOver("the master's history changed (it restarted, or its data was replaced); "
                              "catching up again from where this slave is")
        self.master_seq = max(self.master_seq, message.last_seq)
        if message.last_seq <= self.state.applied:
            return message.ack_wanted
        if message.first_seq > self.state.applied + 1:
            self.counts["gaps"] += 1
            log.info("missed writes %d..%d; catching up", self.state.applied + 1,
                     message.first_seq - 1)
            self._catch_up(conn)
            if message.last_seq <= self.state.applied or not message.entries:
                return message.ack_wanted
        self._apply(message.first_seq, message.entries)
        return message.ack_wanted

    def _apply(self, first_seq: int, entries: list) -> None:
        """Apply the writes first_seq.. that this slave does not have yet."""
        skip = max(0, self.state.applied + 1 - first_seq)
        entries = entries[skip:]
        if entries:
            # Numbered as the master numbered them while this node's own numbers allow: then
            # a promoted slave's log goes on from its old master's (docs/failover.md).
            self.engine.write_batch([(key, value) for key, value in entries], sync=False,
                                    first_seq=first_seq + skip)
            self.state.applied = first_seq + len(entries) - 1 if first_seq > self.state.applied \
                else self.state.applied + len(entries)

    def _catch_up(self, conn: Connection) -> None:
        self.counts["catch_ups"] += 1
        while True:
            answer = conn.call("sync", [self.state.history, self.state.applied, CATCH_UP_BYTES])
            self.master_seq = max(self.master_seq, answer["seq"])
            if answer["mode"] == "snapshot":
                self._check_replaceable(answer)
                self._load_snapshot(conn, answer)
                continue  # then the writes after the snapshot
            self.state.history = answer["history"]  # the same line of writes, maybe renamed
            for first, entries in answer["batches"]:
                if not check_entries(entries):
                    raise SessionOver("the master sent malformed log entries")
                self._apply(first, entries)
            if not answer["more"]:
                break
        self._save_position()
        self.ready = True
        self._ack(conn)

    def _ack(self, conn: Connection) -> None:
        """Tell the master at once what this slave applied, if that moved: a write waiting
        on its write concern is released by it (the 0.5 s report would be too slow)."""
        if self.state.applied != self._acked:
            # "Applied" means what this node's --fsync promises: under "always" the write is
            # on its disk before the master may count it (a power cut must not undo a
            # w=majority write); the engine makes this a no-op under the other policies.
            self.engine.sync()
            if conn.send_only("ack", [self.address, self.state.history, self.state.applied]):
                self._acked = self.state.applied

    def _check_replaceable(self, answer: dict) -> None:
        history, applied = self.state.history, self.state.applied
        if history is None or answer["history"] == history or answer["seq"] >= applied \
                or self._replace_data:
            return
        self.ready = False  # the router reads elsewhere; the data stays for an operator
        log.error("REFUSING to replace this slave's data (%d writes of history %s) with a "
                  "snapshot of %s, a master with another history and only %d writes: it looks "
                  "like the master lost its data. Restore the master, or subscribe this node "
                  "again (POST /subscribe) to accept the master's data.", applied, history,
                  self.state.master, answer["seq"])
        self._stop.wait(30.0)
        raise SessionOver("the master's data would replace more of ours")

    def _load_snapshot(self, conn: Connection, answer: dict) -> None:
        """Make the data exactly the snapshot's: its items, and tombstones for every key of
        ours it lacks (walking both in key order, one chunk's key range at a time)."""
        log.info("full sync from %s as of sequence %d", self.state.master, answer["seq"])
        self.counts["full_syncs"] += 1
        self.ready = False
        # A crash now: start over (a former master's lineage is kept until rolled back).
        self.state = ReplicationState(None, 0, self.state.master, former=self.state.former)
        save_state(self.data_dir, self.state)
        compare = self._roll_back(answer)
        # A bar on the node's standard error when that is a terminal; the log has the rest.
        progress = Progress(f"full sync from {self.state.master}")
        try:
            kept = self._load_chunks(conn, answer, compare, progress)
        finally:
            progress.close()
        if compare is not None and not kept:
            log.info("no key here differed from %s's snapshot: nothing to roll back",
                     self.state.master)
        self.engine.advance_sequence(answer["seq"])  # the master's next write numbers on
        self.state = ReplicationState(answer["history"], answer["seq"], self.state.master)
        self._save_position()  # the rollback files are durable: the former lineage goes
        self._replace_data = False

    def _load_chunks(self, conn: Connection, answer: dict, compare: Optional[tuple[int, str]],
                     progress: Progress) -> int:
        """Write the snapshot's chunks over our data; how many of our writes were kept aside."""
        kept = 0
        after: Optional[bytes] = None  # the last key of the previous chunk
        chunk = answer
        received = 0
        while True:
            items = chunk["items"]
            if not check_entries(items) or any(value is None for _, value in items):
                raise SessionOver("the master sent a malformed snapshot chunk")
            upto = None if chunk["done"] else items[-1][0]
            incoming = {key for key, _ in items}
            ours = self.engine.items(None if after is None else after + b"\0",
                                     None if upto is None else upto + b"\0")
            if compare is not None:  # kept aside before this chunk's batch replaces them
                ours = list(ours)
                kept += self._keep_aside(rollback.differences(ours, items), False, *compare)
            stale = [(key, None) for key, _ in ours if key not in incoming]
            self.engine.write_batch([(key, value) for key, value in items] + stale, sync=False)
            received += len(items)
            progress(received, answer.get("keys_estimate"))
            if chunk["done"]:
                return kept
            after = upto
            chunk = conn.call("chunk", [answer["cursor"]])

    def _rejoin(self, conn: Connection, forked_from: object) -> None:
        """A former master whose logs hold every write it took past the new master's fork:
        keep those aside, give their keys the new master's items, and go on from the new
        master's log at the fork, with no snapshot (Redis's PSYNC2 idea). Otherwise this
        does nothing, and the snapshot's load compares instead (_roll_back)."""
        forked_at = rollback.fork_point(forked_from, self.state.former)
        writes = None if forked_at is None else self.engine.writes_since(forked_at)
        if writes is None:
            return
        history = forked_from[0]
        kept = rollback.last_writes(writes)
        self._keep_aside(kept, True, forked_at, history)
        keys = [key for key, _, _ in kept]
        for start in range(0, len(keys), RESTORE_KEYS):
            part = keys[start:start + RESTORE_KEYS]
            items = conn.call("values", [part])["items"]
            # Items as of the new master's sequence then: its log from the fork on, applied
            # next, ends with each key as the new master has it.
            self.engine.write_batch(list(zip(part, items)), sync=False)
        self.state = ReplicationState(history, forked_at, self.state.master)
        self._save_position()
        log.info("rejoining %s from its log after write %d of history %s (%d key(s) restored "
                 "from it)", self.state.master, forked_at, history, len(keys))

    def _roll_back(self, answer: dict) -> Optional[tuple[int, str]]:
        """For a former master whose writes past the new master's fork _rejoin could not find
        exactly: (fork, history) to compare each snapshot chunk against ours from. None for
        any other slave."""
        former = self.state.former
        if former is None:
            return None
        forked_from = answer.get("forked_from")
        forked_at = rollback.fork_point(forked_from, former)
        if forked_at is None:  # several failovers or restarts since: where it forked is lost
            log.warning("the new master %s says it forked from %r, not from this node's writes "
                        "as a master (history %s): keeping aside every key that differs from "
                        "its snapshot (not exact)", self.state.master, forked_from, former.history)
            return 0, former.history
        log.warning("this node's logs no longer reach back to write %d of history %s: "
                    "keeping aside every key that differs from %s's snapshot (not exact)",
                    forked_at + 1, forked_from[0], self.state.master)
        return forked_at, forked_from[0]

    def _keep_aside(self, writes: list[rollback.Write], exact: bool, forked_at: int,
                    history: str) -> int:
        """Write `writes` to a rollback file, if any; how many."""
        if not writes:
            return 0
        path = rollback.write_file(self.data_dir, self.epoch, writes, exact, forked_at, history)
        self.rolled_back = {"files": self.rolled_back["files"] + 1,
                            "entries": self.rolled_back["entries"] + len(writes)}
        log.warning("ROLLED BACK %d key(s) this node wrote as master of history %s after write "
                    "%d that the new master %s never got%s; not applied, kept in %s",
                    len(writes), history, forked_at, self.state.master,
                    "" if exact else " (or that it changed since: not exact)", path)
        return len(writes)

    def _save_position(self) -> None:
        self.engine.sync(force=True)  # the file must never claim more than the disk holds
        self.state.aligned = self.engine.sequence == self.state.applied
        save_state(self.data_dir, self.state)

    def _recover_position(self) -> None:
        """After a crash the file may lag the data by up to a report's worth of writes. When
        the data numbered its writes as the master did at the last save, every write since
        was numbered so too: the data's own sequence number is then the position. (A stale
        position would make the router's choice of whom to promote unsound.)"""
        state = self.state
        if state.aligned and state.history is not None and self.engine.sequence > state.applied:
            log.info("the data holds the master's writes up to %d (the state file said %d)",
                     self.engine.sequence, state.applied)
            state.applied = self.engine.sequence

    def _report(self, conn: Connection) -> None:
        """The slave's heartbeat to its master (which lists it, with its lag); saves the position."""
        self._save_position()
        answer = conn.call("replica", [self.address, self.state.history, self.state.applied,
                                       self.ready])
        self.master_seq = max(self.master_seq, answer["seq"])
