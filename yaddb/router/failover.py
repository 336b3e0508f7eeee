"""The router's side of failover (docs/failover.md): leases for masters, detection of a silent
master, the promotion of the one slave that can be shown to hold every write acknowledged with
w=majority or all, and the commands that bring every other member in line.

It runs inside the router's loop thread, which owns the sockets: it sends through `control`
and hears the answers through the callbacks it gives.

    every RENEW_EVERY_S     lease [epoch, granted_at, LEASE_S] to each master
    after failover_after s  without a lease answer: ask every slave its position, promote one
    every RECONCILE_S       a member whose role differs from the configuration is told again
"""
from __future__ import annotations

import logging
import time
from typing import Callable, Optional

from yaddb.errors import BadRequest
from yaddb.replication.state import ReplicationState
from yaddb.limits import SLAVE_FORGET_S
from yaddb.router.configuration import Configuration
from yaddb.router.links import NodeLink, Partition
from yaddb.transport.protocol import Reply

log = logging.getLogger(__name__)

LEASE_S = 2.0        # a master's lease; failover_after must exceed it (the fence's margin)
RENEW_EVERY_S = 0.5
RECONCILE_S = 1.0    # how often a member whose role is wrong is told its role again
RETRY_PROMOTION_S = 1.0
STALE_EPOCH = 10     # the wire code of StaleEpoch (errors.py)
Control = Callable[[NodeLink, str, list, Callable[[Optional[Reply]], None]], None]


def check_failover_after(seconds: float) -> None:
    if seconds < 0 or 0 < seconds <= LEASE_S:
        raise BadRequest(f"--failover-after must exceed the {LEASE_S:g} s lease (or be 0 for "
                         f"off), so an old master stops writing before another may start, "
                         f"not {seconds:g}")


class _PartitionWatch:
    """What the router knows of one partition's lease and failover."""

    def __init__(self, now: float) -> None:
        self.granted_at: Optional[float] = None  # the master's time at its last lease answer
        self.writable = False                    # a lease with a real end was granted
        self.last_ok = now                       # router time of that answer
        self.lease_in_flight = False
        self.next_lease = 0.0
        self.promoting = False
        self.next_try = 0.0
        self.waiting: Optional[str] = None       # why promotion waits, for /stats and the log
        # The master's line of writes (its history, and the one a restart continued) and its
        # slaves as it last reported them as a master (or as its promotion set them): its
        # stats from before a promotion describe a slave.
        self.line: Optional[ReplicationState] = None
        self.members: set[str] = set()
        self.expected: set[str] = set()  # the slaves a promoted master was told to count
        self.expected_until = 0.0        # as the master counts them: until it forgets them
        self.commanded: dict[str, float] = {}    # address -> when it was last told its role


class Failover:
    def __init__(self, configuration: Configuration, partitions: list[Partition], control: Control,
                 failover_after: float, node_timeout: float) -> None:
        check_failover_after(failover_after)
        self.configuration = configuration
        self.partitions = partitions
        self.control = control
        self.failover_after = failover_after
        self.node_timeout = node_timeout
        now = time.monotonic()
        self.watches = [_PartitionWatch(now) for _ in partitions]

    def leased(self) -> bool:
        """Whether every master that answers holds a lease (the router's start waits on it)."""
        return all(watch.writable or not partition.master.alive
                   for watch, partition in zip(self.watches, self.partitions))

    def tick(self, now: float) -> None:
        for partition, watch in zip(self.partitions, self.watches):
            _note_master(partition, watch)
            if now >= watch.next_lease and not watch.lease_in_flight:
                self._renew(partition, watch, now)
            silent = now - watch.last_ok
            if silent > self.failover_after and not watch.promoting and now >= watch.next_try:
                self._ask_slaves(partition, watch, silent)
            self._reconcile(partition, watch, now)

    def status(self, index: int) -> dict:
        config = self.configuration.partitions[index]
        watch = self.watches[index]
        return {"epoch": config.epoch, "last_failover": config.last_failover,
                "failover_waiting": watch.waiting,
                "lease_answered_s_ago": round(time.monotonic() - watch.last_ok, 3)}

    # ---- leases --------------------------------------------------------------------------

    def _renew(self, partition: Partition, watch: _PartitionWatch, now: float) -> None:
        index = partition.index
        master = partition.master
        real = watch.granted_at is not None  # the first only starts the clock
        watch.lease_in_flight = True
        watch.next_lease = now + RENEW_EVERY_S

        def answered(reply: Optional[Reply]) -> None:
            watch.lease_in_flight = False
            if partition.master is not master:
                return  # a failover happened meanwhile
            if reply is None:
                return
            if reply.status == 0:
                watch.granted_at = reply.payload["now"]
                watch.last_ok = time.monotonic()
                watch.writable |= real
                if not real:  # a first lease only starts the clock: grant the real one now
                    watch.next_lease = 0.0
            elif reply.status == STALE_EPOCH:
                self.configuration.adopt_epoch(index, (master.stats or {}).get("epoch", 0))
            else:
                log.debug("%s refused its lease: %s", master.name, reply.payload)

        epoch = self.configuration.partitions[index].epoch
        self.control(master, "lease", [epoch, watch.granted_at, LEASE_S], answered)

    # ---- promotion -----------------------------------------------------------------------

    def _ask_slaves(self, partition: Partition, watch: _PartitionWatch, silent: float) -> None:
        """Ask every slave where it is, then promote once all answered or the time is up."""
        slaves = list(partition.slaves.values())
        watch.promoting = True
        answers: dict[str, dict] = {}
        outstanding = {link.address for link in slaves}
        master = partition.master

        def heard(link: NodeLink, reply: Optional[Reply]) -> None:
            outstanding.discard(link.address)
            if reply is not None and reply.status == 0 and isinstance(reply.payload, dict):
                link.stats = reply.payload
                answers[link.address] = reply.payload
            if not outstanding:
                watch.promoting = False
                watch.next_try = time.monotonic() + RETRY_PROMOTION_S
                if partition.master is master:
                    self._choose(partition, watch, answers, silent)

        if not slaves:
            watch.promoting = False
            watch.next_try = time.monotonic() + RETRY_PROMOTION_S
            self._wait(partition, watch, f"master {master.address} is silent and has no slaves")
            return
        for link in slaves:
            self.control(link, "stats", [], lambda reply, link=link: heard(link, reply))

    def _choose(self, partition: Partition, watch: _PartitionWatch, answers: dict[str, dict],
                silent: float) -> None:
        """Promote the slave with the highest position, if enough answered to be sure it holds
        every w=majority write: r >= k - floor(n/2) + 1 (docs/failover.md)."""
        master = partition.master
        if time.monotonic() - watch.last_ok <= self.failover_after:
            log.info("partition %d: %s answered again; no failover", partition.index, master.name)
            return  # it took a lease meanwhile: promoting now could make two masters
        # Members: every slave the master last listed, and any that answers on its history
        # (one that joined after that report may have confirmed w=majority writes).
        ready = {address: answer["replication"] for address, answer in answers.items()
                 if on_masters_line(answer, watch)}
        members = watch.members | set(ready)
        k = len(members)
        needed = k - (k + 1) // 2 + 1
        if len(ready) < needed or not ready:
            missing = ", ".join(sorted(members - set(ready))) or "none known"
            self._wait(partition, watch, f"master {master.address} is silent; {len(ready)} of "
                       f"its {k} slaves answered ready on its history, {needed} needed to be "
                       f"sure of every w=majority write (not: {missing}); the partition is "
                       f"read-only meanwhile")
            return
        chosen = max(ready, key=lambda address: ready[address]["applied"])
        why = f"master {master.address} silent for {silent:.1f} s (--failover-after " \
              f"{self.failover_after:g})"
        try:
            config = self.configuration.fail_over(partition.index, chosen, why)
        except OSError as exc:  # nothing changed: try again later
            self._wait(partition, watch, f"cannot store the new configuration: {exc}")
            return
        log.warning("partition %d: promoting %s (applied %d) at epoch %d: %s", partition.index,
                    chosen, ready[chosen]["applied"], config.epoch, why)
        partition.replace_master(chosen)
        watch.lease_in_flight = watch.writable = False  # the old master's answer is ignored
        watch.line, watch.members = None, set(partition.slaves)
        watch.expected, watch.expected_until = set(partition.slaves), time.monotonic() + SLAVE_FORGET_S
        watch.waiting = None
        watch.granted_at = None
        watch.last_ok = time.monotonic()  # the new master gets its own failover_after
        self._promote(partition, watch)

    def _promote(self, partition: Partition, watch: _PartitionWatch) -> None:
        link = partition.master
        watch.commanded[link.address] = time.monotonic()
        epoch = self.configuration.partitions[partition.index].epoch

        def answered(reply: Optional[Reply]) -> None:
            if reply is not None and reply.status == 0 and partition.master is link:
                watch.next_lease = 0.0  # its writes wait on the first lease: send it now
                history = reply.payload.get("history")
                watch.line = ReplicationState(history) if isinstance(history, str) else None
            elif reply is not None and reply.status != 0:
                log.error("%s refused promotion: %s", link.name, reply.payload)

        self.control(link, "promote", [epoch, sorted(partition.slaves)], answered)

    def _wait(self, partition: Partition, watch: _PartitionWatch, why: str) -> None:
        """Say once (not at every retry) why partition `partition` has no new master yet."""
        if watch.waiting != why:
            log.error("partition %d: no failover yet: %s", partition.index, why)
            watch.waiting = why

    # ---- keeping members in line ---------------------------------------------------------

    def _reconcile(self, partition: Partition, watch: _PartitionWatch, now: float) -> None:
        """After a failover, tell each member its role again until its stats show it: the
        configured master "promote", every other member "replicaof" the master."""
        config = self.configuration.partitions[partition.index]
        if config.epoch == 0:
            return  # the operator's own wiring stands until the router first changes it
        for link in partition.links():
            stats = link.stats
            if not link.alive or stats is None or now - watch.commanded.get(link.address, 0.0) < RECONCILE_S:
                continue
            role = stats.get("role")
            if link is partition.master:
                if role == "slave":
                    self._promote(partition, watch)
            elif role == "master" or (stats.get("replication") or {}).get("master") != config.master:
                watch.commanded[link.address] = now
                link.stats = None  # its next stats say whether the command took
                self.control(link, "replicaof", [config.epoch, config.master],
                             lambda reply, link=link: _log_refusal(link, reply))


def _note_master(partition: Partition, watch: _PartitionWatch) -> None:
    """Keep what the master's latest stats say, once they come from it as a master."""
    stats = partition.master.stats
    if stats and stats.get("role") == "master" and stats.get("history"):
        previous, switched_at = stats.get("previous_history"), stats.get("switched_at")
        watch.line = ReplicationState(stats["history"], previous_history=previous,
                                      switched_at=switched_at) \
            if isinstance(previous, str) and type(switched_at) is int \
            else ReplicationState(stats["history"])
        listed = {s["address"] for s in stats.get("slaves") or () if isinstance(s, dict)}
        expected = watch.expected if time.monotonic() < watch.expected_until else set()
        watch.members = listed | expected


def on_masters_line(answer: dict, watch: _PartitionWatch) -> bool:
    """Whether a slave's stats show it ready on the master's line: on its history, or on the
    history a restarted master continued, no further than where it switched. Such a slave
    holds a prefix of the master's writes, and counts toward the promotion rule: a write the
    master acknowledged after its switch was applied by slaves on its new history, so the
    rule's quorum still meets it there. (Comparing positions across the two is sound: the
    master numbers its new history on from the old.)"""
    replication = answer.get("replication")
    return isinstance(replication, dict) and bool(replication.get("ready")) \
        and type(replication.get("applied")) is int and watch.line is not None \
        and watch.line.continues(replication.get("history"), replication["applied"])


def _log_refusal(link: NodeLink, reply: Optional[Reply]) -> None:
    if reply is not None and reply.status != 0:
        log.warning("%s refused replicaof: %s", link.name, reply.payload)
