"""The native Python client: `Client(endpoint, timeout)` speaks to a node or to the router."""
from __future__ import annotations

import threading
import time
from typing import Iterable, Mapping, Optional, Union

import zmq

from yaddb.errors import (BadRequest, NotApplied, NotMaster, SecurityError, YaddbError,
                          YaddbTimeout)
from yaddb.item import Item, decode_item, encode_item, key_for
from yaddb.limits import (DEFAULT_MAX_VALUE_BYTES, DEFAULT_REPLICATION_TIMEOUT_S, check_key,
                          check_write_concern, max_message_bytes)
from yaddb.placement import host_of, is_loopback, partition_for, split
from yaddb.transport.client_conn import Connection, NotSent, RequestConnection, call_each
from yaddb.transport.curve import CurvePair, speaks_curve
from yaddb.transport.local_conn import LocalConnection

Value = Union[bytes, bytearray, memoryview, str]
READ_RETRIES = 2
DIRECT_PAUSE_S = 5.0
DIRECT_CONNECT_S = 0.25  # loopback or LAN connects take a few ms; slower ones use the router


def _labels(value: Value, content_type: Optional[str], encoding: Optional[str]) -> tuple[bytes, str, str]:
    # Labels given are stored exactly, empty ones too; only missing ones get defaults.
    if isinstance(value, str):
        return (value.encode("utf-8"), "text/plain" if content_type is None else content_type,
                "utf-8" if encoding is None else encoding)
    return (value, "application/octet-stream" if content_type is None else content_type,
            "binary" if encoding is None else encoding)


def _reachable(endpoint: str, masters: list[str]) -> bool:
    """False when the masters are on loopback but the router was reached elsewhere: another
    machine's loopback (the one-command cluster binds its nodes to 127.0.0.1)."""
    if endpoint.startswith("inproc://") or is_loopback(host_of(endpoint)):
        return True
    return not any(is_loopback(host_of(master)) for master in masters)


def _local_keys(endpoint: str, keys_dir: object) -> Optional[CurvePair]:
    """A client key from the folder a router on loopback names in its map, when this process
    may read one there: on one machine the files' permissions are the boundary (the keys
    are 0600), as a Unix socket's are for Redis. None otherwise."""
    if not isinstance(keys_dir, str) or not (endpoint.startswith("tcp://")
                                             and is_loopback(host_of(endpoint))):
        return None
    try:
        return CurvePair.from_directory(keys_dir)
    except SecurityError:
        return None


class Client:
    """A connection to YADDB.

        with Client("tcp://127.0.0.1:5555", timeout=2.0) as c:
            key = c.set(key, b"value", content_type="text/plain", encoding="utf-8")
            c.get(key)   # Item(content_type, encoding, value) or None

    Keys are bytes (1 to 1024); `set` with key None uses key_for(value). A str value is stored
    as its UTF-8 bytes with content type text/plain and encoding utf-8 unless given; bytes are
    stored as application/octet-stream, binary. `get` always returns the value as bytes.

    Every call returns or raises within `timeout` seconds: a read gets three tries of a third
    of it each, on a fresh socket each time (Lazy Pirate); a write gets one try of the whole
    timeout, never a blind second one (a timed-out write may or may not have been applied).
    (`read_retries` sets how many; 0 gives a read the whole timeout in one try.)
    Against a router, the client asks it for the partition map once and sends each one-key
    call straight to the key's master (Redis Cluster style; about 1.8x the rate through the
    router, bench/bench_router.py), falling back to the router when that fails; a batch
    (mget, mset, mdelete) is split by partition and sent to every master at once. It stays
    with the router when the map names loopback masters and the router is not on loopback
    (nodes this machine cannot reach), or with direct=False. A master on this machine that
    runs as this process's user is reached over its same-machine socket, no keys needed
    (transport/local.py: about twice the rate of ZeroMQ on two cores).
    With `keys` (a folder holding a client key and the cluster's member.key, or a
    CurvePair) the client speaks CURVE to a router that needs it and to the masters. A
    client without keys, when the masters need keys (the map says so), takes a client key
    from the folder a router on loopback names in its map if this process may read it (the
    one-command cluster's DATA_DIR/keys, to its own user), and otherwise goes through the
    router (CONTRACT.md section 8).
    A Client may be shared by threads (calls take turns under a lock); for parallel requests
    give each thread its own Client.
    """

    def __init__(self, endpoint: str = "tcp://127.0.0.1:5555", timeout: float = 2.0,
                 max_value_bytes: int = DEFAULT_MAX_VALUE_BYTES,
                 context: Optional[zmq.Context] = None, read_retries: int = READ_RETRIES,
                 direct: bool = True, w: Union[int, str] = 1,
                 keys: Union[str, CurvePair, None] = None, local: bool = True) -> None:
        """w: the write concern of every write that does not give its own: 1 (the master
        alone), a number of members, "majority" or "all" (CONTRACT.md section 7).
        local=False: reach masters on this machine over ZeroMQ too, not their same-machine
        socket."""
        self.endpoint = endpoint
        self.w = check_write_concern(w)
        # How long a master may hold a w>1 write; a router's map says what it uses.
        self.replication_timeout = DEFAULT_REPLICATION_TIMEOUT_S
        self.max_value_bytes = max_value_bytes
        self.read_retries = read_retries
        self.timeout = timeout
        self.direct = direct
        self.local = local
        self._context = context
        self._keys = CurvePair.from_directory(keys) if isinstance(keys, str) else keys
        secure = None
        if self._keys is not None and speaks_curve(context or zmq.Context.instance(), endpoint,
                                                   self._keys, timeout):
            secure = self._keys.secure_client
        self._conn = Connection(endpoint, timeout, context, secure=secure)
        self._nodes: Optional[list[RequestConnection]] = None  # per partition, when routing directly
        self._direct_after = 0.0  # monotonic time before which calls go through the endpoint
        self._lock = threading.Lock()
        self._heads: dict[tuple[str, str], bytes] = {}

    def _write_args(self, args: list, w: Optional[Union[int, str]]) -> tuple[list, float]:
        """The write's arguments with its concern (left out when 1: the default on the wire),
        and how much longer than `timeout` its master may take to answer."""
        w = self.w if w is None else check_write_concern(w)
        return (args, 0.0) if w == 1 else (args + [w], self.replication_timeout)

    def _call(self, op: str, args: list, read: bool, extra_time: float = 0.0) -> object:
        with self._lock:
            try:
                return self._conn.call(op, args, self.read_retries if read else 0, extra_time)
            except YaddbTimeout as exc:
                if read or isinstance(exc, NotSent):
                    raise
                raise YaddbTimeout(f"{exc} The write may or may not have been applied.") from None

    def _call_key(self, op: str, key: bytes, args: list, read: bool,
                  extra_time: float = 0.0) -> object:
        """A one-key call: with direct=True straight to the key's master, else via the endpoint.

        The direct path falls back to the router, forgetting the partition map, when the node
        cannot be reached, is no longer the master, refused a write unapplied (its lease ran
        out: a failover may be under way), or (for a read) does not answer; a write that may
        have been applied is never sent a second time.
        """
        if self.direct and time.monotonic() >= self._direct_after:
            with self._lock:
                nodes = self._direct_nodes()
                try:
                    if nodes is not None:
                        return nodes[partition_for(key, len(nodes))].call(op, args, 0, extra_time)
                except (NotSent, NotMaster, NotApplied) as exc:
                    # Nothing was applied: a node no longer master, or one whose lease ran
                    # out while the router replaces it. The router knows the new map.
                    self._forget_partitions(isinstance(exc, NotSent))
                except YaddbTimeout:
                    self._forget_partitions(True)
                    if not read:
                        raise YaddbTimeout("no reply from the key's master; the write may or "
                                           "may not have been applied") from None
        return self._call(op, args, read, extra_time)

    def _call_batch(self, op: str, entries: list, tail: list, read: bool,
                    extra_time: float = 0.0) -> list:
        """mget, mset or mdel of `entries` (then the `tail` arguments, a write concern): with
        direct=True split by partition and sent to every master at once, else via the
        endpoint. What the direct path could not do without maybe applying it twice (parts
        refused unapplied; for a read, any part that failed) goes through the endpoint."""
        results: list = [None] * len(entries)
        todo = range(len(entries))
        if self.direct and time.monotonic() >= self._direct_after:
            with self._lock:
                nodes = self._direct_nodes()
                if nodes is not None:
                    todo = self._scatter(nodes, op, entries, tail, read, extra_time, results)
        if todo:
            answer = self._call(op, [[entries[p] for p in todo]] + tail, read, extra_time)
            if op != "mset":
                for position, value in zip(todo, answer):
                    results[position] = value
        return results

    def _scatter(self, nodes: list[RequestConnection], op: str, entries: list, tail: list, read: bool,
                 extra_time: float, results: list) -> list[int]:
        """Each master's part at once; fills `results` and returns the positions left for the
        endpoint. Raises when a part may have been applied and did not answer, or failed."""
        parts = list(split(op, entries, len(nodes)).items())
        outcomes = call_each([(nodes[index], op, [subset] + tail) for index, (_, subset) in parts],
                             extra_time)
        todo: list[int] = []
        failure: Optional[YaddbError] = None
        forget = pause = False
        for (_, (positions, _)), outcome in zip(parts, outcomes):
            if not isinstance(outcome, YaddbError):
                if op != "mset":
                    for position, value in zip(positions, outcome):
                        results[position] = value
            elif isinstance(outcome, (NotSent, NotMaster, NotApplied)) or (
                    read and isinstance(outcome, YaddbTimeout)):
                todo.extend(positions)  # not applied (or a read): the router's to do
                forget = True
                pause = pause or isinstance(outcome, YaddbTimeout)
            elif isinstance(outcome, YaddbTimeout):
                forget = pause = True
                failure = failure or YaddbTimeout(
                    "no reply from a master for its part of this batch; that part may or may "
                    "not have been applied (like any batch, it is not all or nothing)")
            else:
                failure = failure or outcome
        if forget:
            self._forget_partitions(pause)
        if failure is not None:
            raise failure
        return sorted(todo)

    def _direct_nodes(self) -> Optional[list[RequestConnection]]:
        """The masters' connections, or None when calls go through the endpoint (it gave no
        map: a node, or masters this machine cannot reach). Called under the lock."""
        try:
            return self._partition_connections()
        except YaddbTimeout:  # the router is silent; nothing was sent
            self._forget_partitions(True)
            raise
        except YaddbError:
            self.direct = False
            return None

    def _partition_connections(self) -> list[RequestConnection]:
        """Each partition's master: a LocalConnection or a Connection."""
        if self._nodes is None:
            answer = self._conn.call("map", [], self.read_retries)
            masters = answer["masters"]
            self.replication_timeout = answer.get("replication_timeout_s", self.replication_timeout)
            if not _reachable(self.endpoint, masters):
                raise BadRequest("the masters listen on loopback, the router does not")
            # A master gets as long as the router would give it (then the router answers:
            # 503, or a reply if the master is back), at most half the timeout; one that
            # takes connections no more is left for the router at once.
            wait = min(self.timeout / 2, answer["node_timeout_s"])
            nodes: list[Optional[RequestConnection]] = [LocalConnection.open(master, wait)
                           if self.local and is_loopback(host_of(master)) else None
                           for master in masters]
            keys_required = answer.get("keys_required") and None in nodes
            if keys_required and self._keys is None:
                self._keys = _local_keys(self.endpoint, answer.get("keys_dir"))
                if self._keys is None:
                    for node in nodes:
                        if node is not None:
                            node.close()
                    raise BadRequest("the masters take CURVE clients only, and this client has "
                                     "no keys")
            secure = self._keys.secure_client if keys_required else None
            self._nodes = [node or Connection(f"tcp://{master}", wait, self._context,
                                              connect_timeout=min(wait, DIRECT_CONNECT_S),
                                              secure=secure)
                           for node, master in zip(nodes, masters)]
        return self._nodes

    def _forget_partitions(self, pause: bool = False) -> None:
        """Drop the map; with pause, go through the endpoint alone for a while, so masters
        this client cannot reach cost one failed try per DIRECT_PAUSE_S, not one per call."""
        for node in self._nodes or ():
            node.close()
        self._nodes = None
        if pause:
            self._direct_after = time.monotonic() + DIRECT_PAUSE_S

    def _blob(self, key: Optional[bytes], value: Value, content_type: Optional[str] = None,
              encoding: Optional[str] = None) -> tuple[bytes, bytes]:
        raw, content_type, encoding = _labels(value, content_type, encoding)
        if type(raw) is bytes and len(raw) <= self.max_value_bytes:
            # The common case: the two labels' encoded head, checked once and then reused.
            head = self._heads.get((content_type, encoding))
            if head is None:
                if len(self._heads) > 256:
                    self._heads.clear()  # many distinct labels: keep the cache small
                head = self._heads[(content_type, encoding)] = encode_item(content_type, encoding, b"")
            blob = head + raw
        else:
            blob = encode_item(content_type, encoding, raw, self.max_value_bytes)
        return check_key(key_for(raw) if key is None else key), blob

    def set(self, key: Optional[bytes], value: Value, content_type: Optional[str] = None,
            encoding: Optional[str] = None, w: Optional[Union[int, str]] = None) -> bytes:
        """Store an item; returns its key once the partition master has it durably (and, with
        w above 1, enough members applied it; else ReplicationTimeout says where it is)."""
        key, blob = self._blob(key, value, content_type, encoding)
        args, extra_time = self._write_args([key, blob], w)
        self._call_key("set", key, args, False, extra_time)
        return key

    def get(self, key: bytes) -> Optional[Item]:
        key = check_key(key)
        blob = self._call_key("get", key, [key], read=True)
        return None if blob is None else decode_item(blob)

    def delete(self, key: bytes, w: Optional[Union[int, str]] = None) -> bool:
        """Delete a key; True if it existed. `w` as for set."""
        key = check_key(key)
        args, extra_time = self._write_args([key], w)
        return bool(self._call_key("del", key, args, False, extra_time))

    def ping(self) -> bool:
        return self._call("ping", [], read=True) == "PONG"

    def stats(self) -> dict:
        return self._call("stats", [], read=True)

    def partition_map(self) -> dict:
        """The router's map: "masters" (host:port, in partition order) and its timeouts."""
        return self._call("map", [], read=True)

    def mset(self, items: Union[Mapping[Optional[bytes], Value], Iterable[tuple]],
             w: Optional[Union[int, str]] = None) -> list[bytes]:
        """Store many items in one round trip; `items` maps key -> value, or is a sequence of
        (key, value) or (key, value, content_type, encoding). Returns the keys, in order.
        `w` as for set."""
        pairs = items.items() if isinstance(items, Mapping) else items
        entries = [self._blob(*pair) for pair in pairs]
        size = sum(len(key) + len(blob) + 16 for key, blob in entries)
        if size > max_message_bytes(self.max_value_bytes) - (64 << 10):
            raise BadRequest(f"this batch is {size} bytes, over what one message may carry; "
                             f"split it into several mset calls")
        if entries:
            args, extra_time = self._write_args([[list(entry) for entry in entries]], w)
            self._call_batch("mset", args[0], args[1:], False, extra_time)
        return [key for key, _ in entries]

    def mget(self, keys: Iterable[bytes]) -> list[Optional[Item]]:
        blobs = self._call_batch("mget", [check_key(key) for key in keys], [], True)
        return [None if blob is None else decode_item(blob) for blob in blobs]

    def mdelete(self, keys: Iterable[bytes], w: Optional[Union[int, str]] = None) -> list[bool]:
        args, extra_time = self._write_args([[check_key(k) for k in keys]], w)
        return [bool(existed) for existed in self._call_batch("mdel", args[0], args[1:], False,
                                                               extra_time)]

    def close(self) -> None:
        with self._lock:
            self._forget_partitions()
            self._conn.close()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.close()
