"""What the chaos test's clients did, operation by operation, for the checker (checker.py).

Each operation is recorded once it has finished: who did it, what, on which key, with which
value, when it started and ended (time.monotonic() of this process, the one clock every client
thread shares) and how it ended:

    ok    acknowledged: a write or delete the database took, a read and what it returned
    fail  definitely not applied: the request never left (NotSent) or was refused
          (NotMaster, BadRequest)
    info  unknown: a timeout or an Unavailable answer. The write may have been applied, and
          may still be applied later: a timed-out request can sit in a socket buffer or in a
          stopped process and be applied after the client gave up.

The nemesis's actions are recorded beside them as events, so a report can show what was
happening around a suspicious operation. What each node said it was (master or slave, under a
lease or not) is recorded as RoleSamples (sampler.py), on the same clock.
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Callable, Optional

from yaddb.errors import BadRequest, NotApplied, NotMaster, YaddbError
from yaddb.transport.client_conn import NotSent

OK, FAIL, INFO = "ok", "fail", "info"
WRITE, DELETE, READ = "write", "delete", "read"


@dataclass(frozen=True)
class Op:
    """One finished operation. `value`: for a write the value written (unique per write, so
    it names the write), for a read the value returned (None: the key was absent), for a
    delete None. `w` is the write concern asked for (None: the default, w=1)."""
    process: str
    kind: str
    key: bytes
    value: Optional[bytes]
    start: float
    end: float
    result: str
    error: str = ""
    w: Optional[str] = None

    @property
    def mutates(self) -> bool:
        return self.kind in (WRITE, DELETE)

    def describe(self, t0: float = 0.0) -> str:
        """One line for a person: times in seconds since `t0` (the history's start)."""
        what = {WRITE: f"write {show(self.value)}", DELETE: "delete",
                READ: f"read -> {show(self.value) if self.result == OK else '?'}"}[self.kind]
        error = f" ({self.error})" if self.error else ""
        concern = f" w={self.w}" if self.w else ""
        return (f"[{self.start - t0:8.3f} .. {self.end - t0:8.3f}] {self.process:<4} {what} "
                f"key {show(self.key)}{concern}: {self.result}{error}")


@dataclass(frozen=True)
class Event:
    """Something the nemesis did (or the test), at one moment."""
    at: float
    what: str


@dataclass(frozen=True)
class RoleSample:
    """One answer of a node to `stats`: asked and answered are this process's
    time.monotonic() before the request left and when its answer came; the rest is what the
    node said (a node that says nothing of leases counts as never leased, epoch 0)."""
    node: str
    asked: float
    answered: float
    role: str
    epoch: int
    leased: bool
    lease_s: float
    partition: int = 0
    clock: Optional[float] = None  # the node's monotonic time of the answer (one kernel's clock)

    @property
    def may_take_writes(self) -> bool:
        """A master with a lease left, or one no router ever leased (it is not fenced)."""
        return self.role == "master" and (not self.leased or self.lease_s > 0)

    def describe(self, t0: float = 0.0) -> str:
        lease = f"lease {self.lease_s:.3f} s left" if self.leased else "never leased"
        return (f"[{self.asked - t0:8.3f} .. {self.answered - t0:8.3f}] {self.node} said "
                f"{self.role}, epoch {self.epoch}, {lease}")


def show(data: Optional[bytes]) -> str:
    if data is None:
        return "(absent)"
    text = data.decode("ascii", "backslashreplace")
    return text if len(text) <= 40 else text[:37] + "..."


def outcome_of(error: BaseException) -> str:
    """FAIL for an error that proves the operation was not applied, INFO for any other.

    NotApplied is a refusal before anything was applied (the router could not hand the write
    to a master, a master refused for want of slaves or lease); any other Unavailable (no
    answer in time, ReplicationTimeout) may have been applied, so it counts as unknown."""
    if isinstance(error, (NotSent, NotApplied, NotMaster, BadRequest)):
        return FAIL
    return INFO


class History:
    """Operations and events, appended from many threads."""

    def __init__(self) -> None:
        self.started = time.monotonic()
        self._lock = threading.Lock()
        self._ops: list[Op] = []
        self._events: list[Event] = []

    def run(self, process: str, kind: str, key: bytes, value: Optional[bytes],
            call: Callable[[], object], w: Optional[str] = None) -> Op:
        """Do `call` and record it. For a read, what `call` returns is the value read
        (bytes, or None for absent). A YaddbError is recorded, not raised; anything else is a
        bug of the test and propagates (recorded as info first: it may have been sent)."""
        start = time.monotonic()
        try:
            returned = call()
        except YaddbError as exc:
            op = Op(process, kind, key, None if kind == READ else value, start,
                    time.monotonic(), outcome_of(exc), f"{type(exc).__name__}: {exc}"[:160], w)
        except BaseException as exc:
            self.add(Op(process, kind, key, None if kind == READ else value, start,
                        time.monotonic(), INFO, f"test error {type(exc).__name__}", w))
            raise
        else:
            op = Op(process, kind, key, returned if kind == READ else value, start,
                    time.monotonic(), OK, "", w)
        self.add(op)
        return op

    def add(self, op: Op) -> None:
        with self._lock:
            self._ops.append(op)

    def note(self, what: str) -> Event:
        event = Event(time.monotonic(), what)
        with self._lock:
            self._events.append(event)
        return event

    @property
    def ops(self) -> list[Op]:
        """A copy, in the order operations finished."""
        with self._lock:
            return list(self._ops)

    @property
    def events(self) -> list[Event]:
        with self._lock:
            return list(self._events)

    def acknowledged_since(self, moment: float, kind: str = WRITE) -> int:
        """How many operations of `kind` that started after `moment` were acknowledged."""
        with self._lock:
            return sum(1 for op in self._ops
                       if op.kind == kind and op.result == OK and op.start > moment)

    def counts(self) -> dict[str, int]:
        """`kind result` (with ` w=...` when one was given) -> how many: for a summary."""
        out: dict[str, int] = {}
        for op in self.ops:
            name = f"{op.kind} {op.result}" + (f" w={op.w}" if op.w else "")
            out[name] = out.get(name, 0) + 1
        return out
