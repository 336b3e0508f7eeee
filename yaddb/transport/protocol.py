"""The wire protocol between YADDB processes: pure functions from bytes to messages and back.

Every message is one ZeroMQ frame holding one msgpack array (a ROUTER adds the peer's routing
id in front; that frame is the socket's business, not this module's):

    request  [VERSION, request_id, op, args]       op a str, args a list
    reply    [VERSION, request_id, status, payload] status 0 = ok, else an error code and
                                                    payload the message for a person

Requests and their ok payloads (keys are bytes, items are the blobs of yaddb.item):

    ping   []                         -> "PONG"
    get    [key]                      -> item or nil
    set    [key, item (, w)]          -> the write's sequence number
    del    [key (, w)]                -> true if the key existed
    mget   [[key, ...]]               -> [item or nil, ...]
    mset   [[[key, item], ...] (, w)] -> the last write's sequence number
    mdel   [[key, ...] (, w)]         -> [existed, ...]
    stats  []                         -> a map of figures
    map    []                         -> {"masters": ["host:port" of each partition's master],
                                          "node_timeout_s": seconds, "replication_timeout_s":
                                          seconds, "keys_required": whether masters take CURVE
                                          peers only} (routers only: for clients that route
                                          by themselves)

A write's last argument may be its write concern `w`: a number of members (1, the default
when it is left out, is the master alone), "majority" or "all" of the partition's members.
With w other than 1 the master replies once enough members applied the write, or with
ReplicationTimeout after its replication timeout.

Replication, between nodes (yaddb.replication.master says what each answers):

    sync    [history, applied, max_bytes]        a slave catching up: log or snapshot
    chunk   [cursor]                             the next part of a snapshot
    replica [address, history, applied, ready]   a slave's heartbeat to its master
    ack     [address, history, applied]          a slave's prompt word of what it applied
                                                 (no reply: the master may be waiting on it)
    follow  ["host:port"]                        make this slave replicate that master
    values  [[key, ...]]                         a rejoining master restoring what it rolled back

Control, from a router to its nodes (docs/failover.md):

    lease     [epoch, granted_at or nil, seconds]  -> {"now", "epoch", "lease_s"}: a master's lease
    promote   [epoch, [slave addresses]]           -> {"epoch", "history", "sequence"}: become
                                                      the partition's master
    replicaof [epoch, "host:port"]                 -> {"epoch", "master"}: replicate that master
                                                      (a master steps down first)

With CURVE (transport/curve.py), replication and control operations are for members only:
a client key asking for one gets NotPermitted.

Untrusted bytes go through `decode_request`, which raises BadMessage (carrying the request id
when one could be read, so the error reply still matches) and nothing else.
"""
from __future__ import annotations

from typing import Any, NamedTuple, Optional

import msgpack

from yaddb.errors import (BadMessage, BadRequest, NotApplied, NotMaster, NotPermitted,
                          ReplicationTimeout, StaleEpoch, StorageError, Unavailable, ValueTooLarge,
                          YaddbError, YaddbTimeout)
from yaddb.limits import check_write_concern

VERSION = 1
MAX_BATCH = 10_000  # keys in one mget, mset or mdel

OK = 0
# Error codes on the wire, and the exception each becomes in a client. Never renumber.
ERROR_CODES: dict[int, type[YaddbError]] = {
    1: BadRequest,
    2: ValueTooLarge,
    3: NotMaster,
    4: Unavailable,
    5: BadMessage,
    6: StorageError,
    7: YaddbTimeout,
    8: YaddbError,
    9: ReplicationTimeout,
    10: StaleEpoch,
    11: NotApplied,
    12: NotPermitted,
}
CODE_OF: dict[type, int] = {cls: code for code, cls in ERROR_CODES.items()}

# op -> how many args, and whether each is a key (k), an item (i), a key list (K), pairs (P)
# or anything (a: the op's handler checks it)
OPS: dict[str, str] = {"ping": "", "get": "k", "set": "ki", "del": "k", "mget": "K",
                       "mset": "P", "mdel": "K", "stats": "", "map": "",
                       "sync": "aaa", "chunk": "a", "replica": "aaaa", "follow": "a",
                       "ack": "aaa", "values": "K", "lease": "aaa", "promote": "aa",
                       "replicaof": "aa"}
WRITES = frozenset({"set", "del", "mset", "mdel"})
REPLICATION_OPS = frozenset({"sync", "chunk", "replica", "follow", "ack", "values"})
CONTROL_OPS = frozenset({"lease", "promote", "replicaof"})  # from a router to its nodes
DATA_OPS = frozenset(OPS) - REPLICATION_OPS - CONTROL_OPS
# What each role of an authenticated peer may send (CONTRACT.md section 8, transport/curve.py).
PERMITTED: dict[str, frozenset] = {"member": frozenset(OPS), "client": DATA_OPS}


class Request(NamedTuple):
    request_id: int
    op: str
    args: list                # without the write concern
    w: "int | str" = 1        # a write's concern: members, "majority" or "all"


class Reply(NamedTuple):
    request_id: int
    status: int
    payload: Any

    def result(self) -> Any:
        """The payload of an ok reply; the error, raised, otherwise."""
        if self.status == OK:
            return self.payload
        raise ERROR_CODES.get(self.status, YaddbError)(str(self.payload))


def encode_request(request_id: int, op: str, args: list) -> bytes:
    return msgpack.packb([VERSION, request_id, op, args], use_bin_type=True)


def encode_reply(request_id: int, payload: Any) -> bytes:
    return msgpack.packb([VERSION, request_id, OK, payload], use_bin_type=True)


def encode_error(request_id: Optional[int], error: BaseException) -> bytes:
    """An error reply; any exception that is not a YaddbError is reported as a server fault."""
    code = next((CODE_OF[cls] for cls in type(error).__mro__ if cls in CODE_OF), CODE_OF[YaddbError])
    message = str(error) if isinstance(error, YaddbError) else f"internal error: {error!r}"
    return msgpack.packb([VERSION, -1 if request_id is None else request_id, code, message],
                         use_bin_type=True)


def _unpack(frame: object) -> list:
    if not isinstance(frame, (bytes, bytearray, memoryview)):
        raise BadMessage(f"a message must be bytes, not {type(frame).__name__}")
    try:
        message = msgpack.unpackb(frame)
    except Exception as exc:  # msgpack raises many kinds on garbage; all mean the same here
        raise BadMessage(f"the message is not msgpack: {type(exc).__name__}") from None
    if not isinstance(message, list) or len(message) != 4:
        raise BadMessage("a message must be a msgpack array of 4 elements")
    if message[0] != VERSION:
        raise BadMessage(f"protocol version {message[0]!r} is not {VERSION}; upgrade the older side")
    if type(message[1]) is not int:
        raise BadMessage("the request id must be an integer")
    return message


def decode_request(frame: object) -> Request:
    message = _unpack(frame)
    _, request_id, op, args = message
    try:
        kinds = OPS[op]
    except (KeyError, TypeError):
        raise _bad(request_id, f"unknown operation {op!r}; known: {', '.join(OPS)}") from None
    w: "int | str" = 1
    if isinstance(args, list) and op in WRITES and len(args) == len(kinds) + 1:
        try:
            w = check_write_concern(args[-1])
        except BadRequest as exc:
            raise _bad(request_id, f"{op}: {exc}") from None
        args = args[:-1]
    if not isinstance(args, list) or len(args) != len(kinds):
        raise _bad(request_id, f"{op} takes {len(kinds)} argument(s)")
    for kind, arg in zip(kinds, args):
        if kind in "ki" and type(arg) is not bytes:
            raise _bad(request_id, f"{op}: {'a key' if kind == 'k' else 'an item'} must be bytes")
        if kind in "KP":
            if not isinstance(arg, list) or len(arg) > MAX_BATCH:
                raise _bad(request_id, f"{op} takes a list of at most {MAX_BATCH} entries")
            if kind == "K" and not all(type(key) is bytes for key in arg):
                raise _bad(request_id, f"{op}: every key must be bytes")
            if kind == "P" and not all(isinstance(pair, list) and len(pair) == 2
                                       and type(pair[0]) is bytes and type(pair[1]) is bytes
                                       for pair in arg):
                raise _bad(request_id, f"{op}: every entry must be [key, item], both bytes")
    return Request(request_id, op, args, w)


def decode_reply(frame: object) -> Reply:
    _, request_id, status, payload = _unpack(frame)
    if type(status) is not int:
        raise BadMessage("the reply status must be an integer")
    return Reply(request_id, status, payload)


def _bad(request_id: int, what: str) -> BadMessage:
    error = BadMessage(what)
    error.request_id = request_id
    return error
