"""The master's side of replication, pure of sockets: what it publishes, the retained backlog,
snapshots streamed in chunks, and the slaves it knows.

Slaves ask over the master's request socket (ops of yaddb.transport.protocol):

    sync    [history or nil, applied, max_bytes] -> {"mode": "log", "batches": [[first, entries]..],
                                                     "more": bool, ...}
                                                 or {"mode": "snapshot", "cursor": id, "items":
                                                     [[key, item]..], "done": bool, "seq": S,
                                                     "keys_estimate": N (for progress), ...}
    chunk   [cursor]                             -> {"items": [...], "done": bool}
    replica [address, history, applied, ready]   -> {"seq", "history", "pub_port", "forked_from"}
    values  [[key, ...]]                         -> {"seq", "items"}: items now, nil if absent
    ack     [address, history, applied]          -> no reply: what the slave applied, sent
                                                    after each batch, for write concerns

Every sync answer carries "history", "seq" and "forked_from": [history, seq] when this master
was promoted from a slave that held writes 1..seq of that history (else nil), so a former
master of that history knows which of its writes the new one lacks. A slave gets the log
after `applied` when its history is the master's (or the master's previous one, up to where
that ended) and the backlog still holds it; otherwise a snapshot, consistent as of "seq"
(the engine's point-in-time view; writes go on meanwhile), in key order. `replica` is the
slave's heartbeat: how far it got, so the master can report each slave's lag.
"""
from __future__ import annotations

import itertools
import logging
import time
from typing import Iterator, Optional

from yaddb.errors import BadRequest
from yaddb.limits import SLAVE_FORGET_S
from yaddb.lsm import Engine
from yaddb.replication.backlog import Backlog
from yaddb.replication.messages import Entry, encode_heartbeat, encode_log
from yaddb.replication.state import ReplicationState

log = logging.getLogger(__name__)

CURSOR_IDLE_S = 60.0      # a snapshot nobody asked on for this long is dropped
SLAVE_ALIVE_S = 3.0       # a slave heard from within this is alive


class ReplicationSource:
    def __init__(self, engine: Engine, lineage: ReplicationState | str, backlog_bytes: int,
                 pub_port: int, *, forked_from: Optional[tuple[str, int]] = None) -> None:
        """`lineage`: this master's history id and the one before it (or just an id);
        `forked_from`: (history, seq) of the master this one was a slave of when promoted."""
        if isinstance(lineage, str):
            lineage = ReplicationState(lineage)
        self.engine = engine
        self.lineage = lineage
        self.pub_port = pub_port
        if forked_from is None:
            forked_from = lineage.forked_from
        self.forked_from = None if forked_from is None else list(forked_from)
        self.backlog = Backlog(backlog_bytes)
        # cursor -> (the snapshot's items still to send, last asked at, bytes per chunk)
        self._cursors: dict[int, tuple[Iterator[tuple[bytes, bytes]], float, int]] = {}
        self._next_cursor = itertools.count(1)
        self._slaves: dict[str, dict] = {}
        self._expected: dict[str, float] = {}  # address -> since when (expect_slaves)
        self.snapshots_served = 0
        # The last write published: heartbeats say this, not the engine's sequence, which may
        # hold writes a failed sync kept from being published (slaves would see a false gap).
        self.published_seq = engine.sequence

    @property
    def history(self) -> str:
        return self.lineage.history

    @property
    def previous_history(self) -> Optional[str]:
        return self.lineage.previous_history

    @property
    def switched_at(self) -> int:
        return self.lineage.switched_at

    # -- publishing ----------------------------------------------------------------------------

    def record(self, first_seq: int, entries: list[Entry]) -> None:
        """Keep durable writes in the backlog, before they are published."""
        self.backlog.append(first_seq, entries)

    def publish(self, batches: list[tuple[int, list[Entry]]], ack_wanted: bool = False) -> list[bytes]:
        """Messages for the PUB socket: consecutive batches merged into one each; with
        ack_wanted (a write waits on its concern) slaves are asked to confirm at once."""
        messages = []
        first, entries = batches[0][0], list(batches[0][1])
        for batch_first, batch in batches[1:]:
            if batch_first == first + len(entries):
                entries.extend(batch)
            else:
                messages.append(encode_log(self.history, first, entries, ack_wanted))
                first, entries = batch_first, list(batch)
        messages.append(encode_log(self.history, first, entries, ack_wanted))
        self.published_seq = first + len(entries) - 1
        return messages

    def heartbeat(self) -> bytes:
        return encode_heartbeat(self.history, self.published_seq)

    # -- requests from slaves ------------------------------------------------------------------

    def sync(self, args: list) -> dict:
        history, applied, max_bytes = args
        if not (history is None or isinstance(history, str)) or type(applied) is not int \
                or type(max_bytes) is not int or applied < 0 or max_bytes < 1:
            raise BadRequest("sync takes [history or nil, applied >= 0, max_bytes >= 1]")
        seq = self.engine.sequence
        answer = {"history": self.history, "seq": seq, "pub_port": self.pub_port,
                  "forked_from": self.forked_from}
        if applied <= seq and self.lineage.continues(history, applied):
            batches = [] if applied == seq else self.backlog.since(applied, max_bytes)
            if batches is not None:
                more = bool(batches) and batches[-1][0] + len(batches[-1][1]) - 1 < seq
                return {**answer, "mode": "log", "batches": batches, "more": more}
        return {**answer, **self._start_snapshot(max_bytes)}

    def _start_snapshot(self, max_bytes: int) -> dict:
        self._drop_idle_cursors()
        snapshot = self.engine.snapshot()
        cursor = next(self._next_cursor)
        self._cursors[cursor] = (snapshot.items(), time.monotonic(), max_bytes)
        self.snapshots_served += 1
        log.info("streaming a snapshot as of sequence %d to a slave", snapshot.seq)
        return {"mode": "snapshot", "seq": snapshot.seq, "cursor": cursor,
                "keys_estimate": self.engine.keys_estimate(),
                **self.chunk([cursor], max_bytes)}

    def chunk(self, args: list, max_bytes: Optional[int] = None) -> dict:
        """The next items of a snapshot, about `max_bytes` of them (default: what its sync asked)."""
        cursor = args[0]
        try:
            items, _, asked = self._cursors[cursor]
        except (KeyError, TypeError):
            raise BadRequest(f"no snapshot {cursor!r} in progress (expired after "
                             f"{CURSOR_IDLE_S:g} s idle?); start again with sync") from None
        out: list[list[bytes]] = []
        size = 0
        for key, value in items:
            out.append([key, value])
            size += len(key) + len(value)
            if size >= (max_bytes or asked):
                self._cursors[cursor] = (items, time.monotonic(), asked)
                return {"items": out, "done": False}
        del self._cursors[cursor]
        return {"items": out, "done": True}

    def _drop_idle_cursors(self) -> None:
        now = time.monotonic()
        for cursor, (_, touched, _) in list(self._cursors.items()):
            if now - touched > CURSOR_IDLE_S:
                del self._cursors[cursor]

    def heard_from(self, args: list) -> dict:
        address, history, applied, ready = args
        if not isinstance(address, str) or type(applied) is not int:
            raise BadRequest("replica takes [address, history, applied, ready]")
        self._note(address, history, applied, bool(ready) and history == self.history)
        return {"seq": self.engine.sequence, "history": self.history, "pub_port": self.pub_port,
                "forked_from": self.forked_from}

    def values(self, args: list) -> dict:
        """`values [[key, ...]]`: each key's item now (nil if absent) and the sequence number
        they are as of. A rejoining master restores with them the keys it rolled back, then
        goes on from the log (replication/slave.py)."""
        get = self.engine.get  # the keys are checked by the protocol (kind "K")
        return {"seq": self.engine.sequence, "items": [get(key) for key in args[0]]}

    def acked(self, args: list) -> None:
        """A slave's word that it applied everything up to `applied` (of our history)."""
        address, history, applied = args
        if not isinstance(address, str) or type(applied) is not int:
            raise BadRequest("ack takes [address, history, applied]")
        known = self._slaves.get(address)
        self._note(address, history, applied, known is not None and known["ready"]
                   and history == self.history)

    def _note(self, address: str, history: object, applied: int, ready: bool) -> None:
        # Lag as of the report (against the sequence now, a slave keeping up would look a
        # report's worth of writes behind). Only writes of our history count as confirmed.
        self._slaves[address] = {"applied": applied, "ready": ready, "seen": time.monotonic(),
                                 "lag": max(0, self.engine.sequence - applied),
                                 "confirmed": applied if history == self.history else 0}

    # -- write concern -------------------------------------------------------------------------

    def expect_slaves(self, addresses: list[str], own_address: str) -> None:
        """Count these slaves as members before they are heard from (a promoted master's
        partition), so w=majority keeps meaning a majority of the partition, not of the
        slaves that caught up so far."""
        now = time.monotonic()
        self._expected.update((address, now) for address in addresses if address != own_address)

    def members(self) -> int:
        """The partition's members as this master knows them: itself, every slave listed and
        every slave it was told to expect (until forgotten as a silent slave would be)."""
        now = time.monotonic()
        expected = {address for address, since in self._expected.items()
                    if now - since <= SLAVE_FORGET_S}
        return 1 + len(expected.union(self._slaves))

    def confirmed(self, seq: int) -> int:
        """How many members hold write `seq`: this master, and each slave that confirmed it."""
        return 1 + sum(slave["confirmed"] >= seq for slave in self._slaves.values())

    def slaves_heard_within(self, seconds: float) -> int:
        """Slaves that confirmed something within `seconds` (for --min-slaves-to-write)."""
        now = time.monotonic()
        return sum(now - slave["seen"] <= seconds for slave in self._slaves.values())

    def slaves(self) -> list[dict]:
        """Each slave heard from lately: its address, position, lag and liveness."""
        now = time.monotonic()
        for address, slave in list(self._slaves.items()):
            if now - slave["seen"] > SLAVE_FORGET_S:
                del self._slaves[address]
        return [{"address": address, "applied": slave["applied"],
                 "lag": slave["lag"], "ready": slave["ready"],
                 "alive": now - slave["seen"] <= SLAVE_ALIVE_S,
                 "last_seen_s_ago": round(now - slave["seen"], 3)}
                for address, slave in sorted(self._slaves.items())]
