"""The cluster's configuration: which node is master of each partition, at which epoch, and
its last failover. One owner (this module), kept in one file written atomically, so a router
restarted after a failover keeps the new master; a later router may keep it in a consensus
store instead (docs/failover.md).

An epoch only grows: a failover is one step, stored before the router acts on it, so the
router never reuses an epoch and no node holds one the router has forgotten.
"""
from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import asdict, dataclass, field, replace
from typing import Optional

from yaddb.durable import write_atomically
from yaddb.errors import BadRequest, CorruptionError

log = logging.getLogger(__name__)

FILE_NAME = "configuration.json"


@dataclass
class PartitionConfig:
    epoch: int
    master: str
    last_failover: Optional[dict] = None  # {"at", "epoch", "from", "to", "why"}
    # Every other member the router learned of (slaves, a replaced master), so a restarted
    # router still tells each its role: --nodes names masters only.
    members: list[str] = field(default_factory=list)


class Configuration:
    """Every partition's configuration; `path` None keeps it in memory (failover off)."""

    def __init__(self, masters: list[str], directory: Optional[str] = None) -> None:
        self.path = None if directory is None else os.path.join(directory, FILE_NAME)
        if directory is not None:
            os.makedirs(directory, exist_ok=True)
        self.partitions = [PartitionConfig(0, master) for master in masters]
        stored = self._load()
        if stored is not None:
            self._adopt(stored, masters)

    def _load(self) -> Optional[list[PartitionConfig]]:
        if self.path is None:
            return None
        try:
            with open(self.path, "rb") as file:
                doc = json.loads(file.read())
            partitions = [PartitionConfig(p["epoch"], p["master"], p.get("last_failover"),
                                          list(p.get("members", [])))
                          for p in doc["partitions"]]
        except FileNotFoundError:
            return None
        except (ValueError, KeyError, TypeError):
            raise CorruptionError(self.path, None, "not a router configuration file") from None
        if not all(type(p.epoch) is int and isinstance(p.master, str)
                   and all(isinstance(m, str) for m in p.members) for p in partitions):
            raise CorruptionError(self.path, None, "wrong types in the router configuration")
        return partitions

    def _adopt(self, stored: list[PartitionConfig], masters: list[str]) -> None:
        if len(stored) != len(masters):
            raise BadRequest(f"{self.path} holds {len(stored)} partitions, but --nodes names "
                             f"{len(masters)}; a cluster keeps its partition count (use "
                             f"another --data-dir for another cluster)")
        for index, (partition, given) in enumerate(zip(stored, masters)):
            if partition.master != given:
                log.warning("partition %d: the stored configuration (epoch %d, master %s) wins "
                            "over --nodes (%s)", index, partition.epoch, partition.master, given)
        self.partitions = stored

    @property
    def masters(self) -> list[str]:
        return [partition.master for partition in self.partitions]

    def fail_over(self, index: int, to: str, why: str) -> PartitionConfig:
        """Make `to` the master of partition `index` at the next epoch, stored before return."""
        partition = self.partitions[index]
        epoch = partition.epoch + 1
        return self._replace(index, PartitionConfig(epoch, to, {
            "at": round(time.time(), 3), "epoch": epoch, "from": partition.master, "to": to,
            "why": why}, sorted(set(partition.members) - {to} | {partition.master})))

    def adopt_epoch(self, index: int, epoch: int) -> None:
        """Catch up with an epoch a node holds (this router's file was lost or replaced):
        the router's own next epoch must be above every epoch in use."""
        partition = self.partitions[index]
        if epoch > partition.epoch:
            log.warning("partition %d: node reports epoch %d, above this router's %d; "
                        "going on from it", index, epoch, partition.epoch)
            self._replace_or_say(index, replace(partition, epoch=epoch))

    def note_members(self, index: int, addresses: list[str]) -> None:
        """Remember members learned of (a master's slaves), stored when the list grows."""
        partition = self.partitions[index]
        added = set(addresses) - set(partition.members) - {partition.master}
        if added and self.path is not None:
            self._replace_or_say(index, replace(partition, members=sorted(
                added | set(partition.members))))

    def _replace(self, index: int, changed: PartitionConfig) -> PartitionConfig:
        """Store the configuration with partition `index` changed, then use it: the router
        never acts on a change it has not stored. OSError (nothing changed) when it cannot."""
        self._store([*self.partitions[:index], changed, *self.partitions[index + 1:]])
        self.partitions[index] = changed
        return changed

    def _replace_or_say(self, index: int, changed: PartitionConfig) -> None:
        try:
            self._replace(index, changed)
        except OSError as exc:
            log.error("cannot store the router's configuration: %s", exc)

    def _store(self, partitions: list[PartitionConfig]) -> None:
        if self.path is not None:
            write_atomically(self.path, json.dumps(
                {"partitions": [asdict(p) for p in partitions]}, indent=1).encode())
