"""What a master publishes on its PUB socket: pure functions from bytes to messages and back.

Every message is one frame holding one msgpack array:

    ["log", history, first_seq, [[key, item or nil], ...]]   writes first_seq, first_seq + 1, ...
    ["logack", history, first_seq, [...]]                     the same, and a write among them
                                                              waits on its write concern: slaves
                                                              say at once what they applied
    ["hb", history, seq]                                      nothing new after seq

`history` names one line of the master's data (a random id made when its data dir was new), so
a slave can tell a restarted master with the same data from a different one. An item of nil is
a delete. Heartbeats go out when the master has been quiet for HEARTBEAT_S, so a slave tells
"nothing happened" from "I am missing updates": a heartbeat past what it applied is a gap.
"""
from __future__ import annotations

from typing import NamedTuple, Optional

import msgpack

from yaddb.errors import BadMessage

HEARTBEAT_S = 0.25
Entry = tuple[bytes, Optional[bytes]]


class Published(NamedTuple):
    history: str
    first_seq: int          # a heartbeat: seq + 1, so last_seq is the master's sequence
    entries: list
    ack_wanted: bool = False  # "logack": the master holds a reply until slaves confirm

    @property
    def last_seq(self) -> int:
        return self.first_seq + len(self.entries) - 1


def encode_log(history: str, first_seq: int, entries: list[Entry], ack_wanted: bool = False) -> bytes:
    return msgpack.packb(["logack" if ack_wanted else "log", history, first_seq, entries],
                         use_bin_type=True)


def encode_heartbeat(history: str, seq: int) -> bytes:
    return msgpack.packb(["hb", history, seq], use_bin_type=True)


def decode_published(frame: bytes) -> Published:
    """A log message or heartbeat; BadMessage for anything else."""
    try:
        message = msgpack.unpackb(frame)
    except Exception as exc:  # msgpack raises many kinds on garbage
        raise BadMessage(f"a published message is not msgpack: {type(exc).__name__}") from None
    if not isinstance(message, list) or len(message) < 3 or not isinstance(message[1], str):
        raise BadMessage("a published message must be [kind, history, ...]")
    if message[0] == "hb" and len(message) == 3 and type(message[2]) is int:
        return Published(message[1], message[2] + 1, [])
    if message[0] in ("log", "logack") and len(message) == 4 and type(message[2]) is int \
            and isinstance(message[3], list) and check_entries(message[3]):
        return Published(message[1], message[2], message[3], message[0] == "logack")
    raise BadMessage(f"unknown published message {str(message[0])[:40]!r}")


def check_entries(entries: list) -> bool:
    """Whether every entry is [key bytes, item bytes or nil]."""
    return all(isinstance(entry, (list, tuple)) and len(entry) == 2 and type(entry[0]) is bytes
               and (entry[1] is None or type(entry[1]) is bytes) for entry in entries)
