"""Write concern: how many members must hold a write before its master acknowledges it.

Pure: the master's node asks `release` about each held reply after every round (slaves' acks
arrive as requests) and on its timer; `ReplicationSource` counts the confirmations.

    w = 1           the master alone (durable there, section 6): never held
    w = N           N members: the master and N-1 slaves that applied the write
    w = "majority"  more than half the members the master knows (itself and its slaves)
    w = "all"       every member it knows
"""
from __future__ import annotations

from typing import NamedTuple, Optional, Union

from yaddb.errors import ReplicationTimeout, Unavailable
from yaddb.replication.master import ReplicationSource
from yaddb.transport.protocol import encode_error

WriteConcern = Union[int, str]


def needed(w: WriteConcern, members: int) -> int:
    """Members that must hold a write for concern `w`, out of `members`."""
    if w == "majority":
        return members // 2 + 1
    if w == "all":
        return members
    return int(w)


class Held(NamedTuple):
    """A write's reply, held until enough members confirm the write or the deadline passes."""
    request_id: int
    reply: bytes
    seq: int            # the write's last sequence number
    w: WriteConcern
    deadline: float     # monotonic
    timeout: float


def release(held: Held, source: Optional[ReplicationSource], now: float,
            fenced: bool = False) -> Optional[bytes]:
    """The frame to send for `held` now: its reply once enough members hold the write, a
    ReplicationTimeout saying where the write is once the deadline passed, else None.

    `fenced`: this master's lease ran out (or it stepped down, source None). Confirmations
    that come now may come from slaves the router already asked for their positions, so the
    write is never acknowledged then: a failover may roll it back."""
    if fenced or source is None:
        return encode_error(held.request_id, Unavailable(
            f"the write is applied on this node (sequence {held.seq}), but it stopped being "
            f"master (its lease ran out, or another was made master) before enough members "
            f"confirmed it (w={held.w}): if another node took over, this write is rolled back "
            f"and kept in this node's DATA_DIR/rollback. Read it back to know"))
    members = source.members()
    want = needed(held.w, members)
    confirmed = source.confirmed(held.seq)
    if confirmed >= want:
        return held.reply
    if now < held.deadline:
        return None
    return encode_error(held.request_id, ReplicationTimeout(
        f"the write is applied and durable on the master (sequence {held.seq}) and applied "
        f"on {confirmed} of {members} members; w={held.w} needs {want}, and no more "
        f"confirmed within {held.timeout:g} s. It is not undone: read it back, or write it "
        f"again, once the slaves are back"))
