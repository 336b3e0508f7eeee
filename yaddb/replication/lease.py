"""A master's lease and the epoch a node has seen: the fence that keeps two masters of one
partition from taking writes at the same time (docs/failover.md, "Leases").

The router sends `lease [epoch, granted_at, seconds]` every fraction of a lease; the node
answers with its own monotonic time at receipt, which the router sends back as the next
`granted_at`. The lease runs to granted_at + seconds on the node's own clock, so a message
held up in the network can only extend it to a moment already past. A node refuses any control
message of an older epoch than the highest it has seen. A node that was ever leased stays
fenced across restarts until a lease comes (DATA_DIR/EPOCH says so); one never leased (a
standalone node) takes writes as before.
"""
from __future__ import annotations

import json
import os
import time

from yaddb.errors import BadRequest, CorruptionError, NotApplied, StaleEpoch
from yaddb.durable import write_atomically

EPOCH_FILE = "EPOCH"


class Lease:
    """The lease and epoch of one node, kept in its data dir."""

    def __init__(self, data_dir: str) -> None:
        self.path = os.path.join(data_dir, EPOCH_FILE)
        self.epoch, self.managed = self._load()
        self.ends = 0.0  # monotonic; no lease until a router grants one after this start

    def _load(self) -> tuple[int, bool]:
        try:
            with open(self.path, "rb") as file:
                doc = json.loads(file.read())
            epoch, managed = doc["epoch"], doc["leased"]
        except FileNotFoundError:
            return 0, False
        except (ValueError, KeyError, TypeError):
            raise CorruptionError(self.path, None, "not an epoch file") from None
        if type(epoch) is not int or epoch < 0 or type(managed) is not bool:
            raise CorruptionError(self.path, None, "wrong types in the epoch file")
        return epoch, managed

    def check_epoch(self, epoch: object, what: str) -> None:
        """StaleEpoch if `epoch` is older than this node's; otherwise it is this node's from
        now on, on disk before the caller acts."""
        if type(epoch) is not int or epoch < 0:
            raise BadRequest(f"{what} takes an epoch, a number >= 0, not {epoch!r}")
        if epoch < self.epoch:
            raise StaleEpoch(f"{what} of epoch {epoch} refused: this node has seen epoch "
                             f"{self.epoch}; a newer configuration replaced the sender's")
        if epoch > self.epoch:
            self.epoch = epoch
            self._save()

    def grant(self, args: list) -> dict:
        """`lease [epoch, granted_at or nil, seconds]`: extend the lease; answers this node's
        time now, the `granted_at` of the next grant."""
        epoch, granted_at, seconds = args
        self.check_epoch(epoch, "lease")
        if not (granted_at is None or isinstance(granted_at, float)) \
                or not isinstance(seconds, (int, float)) or not 0 < seconds <= 60:
            raise BadRequest("lease takes [epoch, granted_at (a time this node sent) or nil, "
                             "seconds (0 < s <= 60)]")
        self.manage()
        now = time.monotonic()
        if granted_at is not None and granted_at <= now:
            self.ends = max(self.ends, granted_at + seconds)
        return {"now": now, "epoch": self.epoch, "lease_s": max(0.0, self.ends - now)}

    def manage(self) -> None:
        """From now on, and after restarts, this node's role and writes are its router's to
        decide: writes need a lease, and its last role command wins over the command line."""
        if not self.managed:
            self.managed = True
            self._save()

    def revoke(self) -> None:
        """End the lease now: a node changing roles starts its new one unleased."""
        self.ends = 0.0

    def writable(self, now: float) -> bool:
        """Whether this node may take (and acknowledge) writes at `now` (monotonic)."""
        return not self.managed or now < self.ends

    def check_writable(self) -> None:
        """NotApplied once a managed lease has run out: the router may promote another."""
        if not self.writable(time.monotonic()):
            raise NotApplied(f"this master's lease ran out (epoch {self.epoch}): it takes no "
                              f"writes until its router renews it, since another node may "
                              f"have been made master; nothing was applied")

    def status(self) -> dict:
        now = time.monotonic()
        # `clock`: this node's monotonic time of the answer, so a test on one machine can
        # place `lease_s` exactly (processes of one kernel share that clock).
        return {"epoch": self.epoch, "leased": self.managed,
                "lease_s": round(max(0.0, self.ends - now), 3), "clock": now}

    def _save(self) -> None:
        write_atomically(self.path, json.dumps({"epoch": self.epoch, "leased": self.managed}).encode())
