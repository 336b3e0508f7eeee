"""A node's replication state, kept in its data dir (REPLICATION) beside the engine's files.

A master keeps its history id there, made anew at every start, with the one before and the
sequence number it ended at: a slave of the old history may continue from the log if it has no
write past that point (Redis's secondary replication id), while one that has writes the master
lost (a power cut under fsync interval) cannot mistake the master's new writes for its own.
A slave keeps its master, the master's history id and the
last master sequence number its data holds, so a restart resumes from there instead of a full
snapshot. A slave saves `applied` only after its engine's log is synced, so the file never
claims more than the disk holds; applying again from an older position is harmless (writes are
absolute), so the file may lag the data.

A master turned into a slave keeps its lineage as a master in `former` until the writes it
took that the new master never got are kept aside (yaddb.replication.rollback), so a crash
in between does not forget them. Files written before `former` existed read as None.
"""
from __future__ import annotations

import json
import os
import secrets
from dataclasses import asdict, dataclass
from typing import Optional

from yaddb.errors import CorruptionError
from yaddb.durable import write_atomically

STATE_FILE = "REPLICATION"


@dataclass
class ReplicationState:
    history: Optional[str] = None   # a master: its own; a slave: its master's, once in sync
    applied: int = 0                # a slave: the last master sequence number its data holds
    master: Optional[str] = None    # a slave: "host:port" of its master
    previous_history: Optional[str] = None  # a master: its history before this start
    switched_at: int = 0                     # a master: its sequence number at this start
    former: Optional["ReplicationState"] = None  # a former master: its lineage, until rolled back
    forked_from: Optional[list] = None  # a promoted master: [its old master's history, applied]
    aligned: bool = False  # a slave: its data's own sequence number was `applied` when saved

    def continues(self, history: Optional[str], position: int) -> bool:
        """Whether `position` of `history` is on this master's line of writes: its own
        history, or the one it continued at this start, up to where it switched (past that,
        the old history holds writes this master lost)."""
        return history is not None and (history == self.history or (
            history == self.previous_history and position <= self.switched_at))


def new_history() -> str:
    return secrets.token_hex(8)


def encode_state(state: ReplicationState) -> bytes:
    return json.dumps(asdict(state), sort_keys=True).encode()


def decode_state(data: bytes, path: str = STATE_FILE) -> ReplicationState:
    try:
        fields = json.loads(data)
    except ValueError:
        fields = None
    state = _state_from(fields, nested=False)
    if state is None:
        raise CorruptionError(path, None, "not a replication state file, or wrong types in it "
                              "(removing it makes a slave take a full snapshot)")
    return state


def _state_from(fields: object, nested: bool) -> Optional[ReplicationState]:
    """The state `fields` (a decoded JSON object) describe, or None if they do not fit."""
    try:
        former = fields.get("former")
        state = ReplicationState(fields["history"], fields["applied"], fields["master"],
                                 fields.get("previous_history"), fields.get("switched_at", 0),
                                 forked_from=fields.get("forked_from"),
                                 aligned=fields.get("aligned", False))
    except (AttributeError, KeyError, TypeError):
        return None
    if former is not None:
        if nested:
            return None  # a former lineage has none of its own
        state.former = _state_from(former, nested=True)
        if state.former is None:
            return None
    if not (state.history is None or isinstance(state.history, str)) \
            or type(state.applied) is not int or state.applied < 0 \
            or not (state.master is None or isinstance(state.master, str)) \
            or not (state.previous_history is None or isinstance(state.previous_history, str)) \
            or type(state.switched_at) is not int or type(state.aligned) is not bool \
            or not (state.forked_from is None or (
                isinstance(state.forked_from, list) and len(state.forked_from) == 2
                and isinstance(state.forked_from[0], str) and type(state.forked_from[1]) is int)):
        return None
    return state


def load_state(directory: str) -> ReplicationState:
    path = os.path.join(directory, STATE_FILE)
    try:
        with open(path, "rb") as file:
            return decode_state(file.read(), path)
    except FileNotFoundError:
        return ReplicationState()


def save_state(directory: str, state: ReplicationState) -> None:
    write_atomically(os.path.join(directory, STATE_FILE), encode_state(state))
