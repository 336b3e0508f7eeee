"""CURVE on YADDB's sockets: who may connect, with which role, and the refusals counted.

A process with keys runs one `Security` per ZeroMQ context: pyzmq's ThreadAuthenticator
answers the context's ZAP requests from one table of keys and roles (ROLES), and gives each
connection its role as the User-Id of its messages. Two ZAP domains keep the write log for
members: a node's request port admits members and clients, its write-log port members only.

Handshakes that fail (no key, an unknown key, garbage) never reach our code as messages; a
socket monitor sees them, and `Refusals` counts them and logs them without flooding the log.
"""
from __future__ import annotations

import itertools
import logging
import threading
import time
from collections import Counter
from dataclasses import dataclass
from typing import Callable, Optional

import zmq
from zmq.auth.thread import ThreadAuthenticator
from zmq.utils import z85
from zmq.utils.monitor import recv_monitor_message

from yaddb.placement import host_of, is_loopback
from yaddb.transport.keys import ClusterKeys, load_client_pair, load_keys, require_curve

log = logging.getLogger(__name__)

MEMBER, CLIENT = "member", "client"
ANYONE_DOMAIN, MEMBERS_DOMAIN = "yaddb", "yaddb-members"
HANDSHAKE_FAILURES = (zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
                      | zmq.EVENT_HANDSHAKE_FAILED_AUTH)
WATCH_POLL_MS = 200
_monitor_ids = itertools.count(1)

SecureSocket = Callable[[zmq.Socket], None]  # configures a socket before it binds or connects


@dataclass(frozen=True)
class CurvePair:
    """What a CURVE client needs: its own pair and the server's public key (z85 bytes)."""
    public: bytes
    secret: bytes
    server_public: bytes

    @classmethod
    def from_directory(cls, directory: str) -> "CurvePair":
        """A client's pair from a folder holding client-N.key_secret and member.key."""
        require_curve()
        return cls(*load_client_pair(directory))

    @classmethod
    def of_member(cls, keys: ClusterKeys) -> "CurvePair":
        """The members' own pair: a member reaches other members with it."""
        return cls(keys.member_public, keys.member_secret, keys.member_public)

    @classmethod
    def member_from_directory(cls, directory: str) -> "CurvePair":
        """The members' pair from a cluster's keys folder (member.key_secret): for tools that
        use a member's operations, such as `yaddb backup`."""
        return cls.of_member(load_keys(directory))

    def secure_client(self, sock: zmq.Socket) -> None:
        sock.curve_serverkey = self.server_public
        sock.curve_publickey = self.public
        sock.curve_secretkey = self.secret


class Refusals:
    """Refused peers and requests by reason; thread-safe. Logged at most once per LOG_EVERY_S
    per reason, so a flood of refusals cannot flood the log."""

    LOG_EVERY_S = 10.0

    def __init__(self, where: str) -> None:
        self.where = where
        self._lock = threading.Lock()
        self._counts: Counter = Counter()
        self._unlogged: Counter = Counter()
        self._logged_at: dict[str, float] = {}

    def note(self, reason: str, detail: str) -> None:
        now = time.monotonic()
        with self._lock:
            self._counts[reason] += 1
            self._unlogged[reason] += 1
            if now - self._logged_at.get(reason, float("-inf")) < self.LOG_EVERY_S:
                return
            unlogged, total = self._unlogged.pop(reason), self._counts[reason]
            self._logged_at[reason] = now
        log.warning("%s refused %d %s (the latest: %s); %d since the start", self.where,
                    unlogged, reason.replace("_", " "), detail, total)

    def counts(self) -> dict[str, int]:
        with self._lock:
            return dict(self._counts)


class _RoleAuthenticator(ThreadAuthenticator):
    """pyzmq's authenticator, with each key's role (not the key itself) as the User-Id."""

    def __init__(self, context: zmq.Context, roles: dict[bytes, str]) -> None:
        super().__init__(context, log=logging.getLogger(__name__ + ".zap"))
        self._roles = {z85.decode(key): role for key, role in roles.items()}

    def curve_user_id(self, client_public_key: bytes) -> str:
        return self._roles[client_public_key]


class _Admits:
    """pyzmq's credentials provider for one ZAP domain."""

    def __init__(self, roles: dict[bytes, str], admitted: frozenset) -> None:
        self._keys = frozenset(key for key, role in roles.items() if role in admitted)

    def callback(self, domain: str, key: bytes) -> bool:
        return key in self._keys


class Security:
    """CURVE for every socket of one context, with a cluster's keys (transport/keys.py).

    Servers present the member pair; this process connects to others as a member. Close it
    before the context is terminated."""

    def __init__(self, context: zmq.Context, keys: ClusterKeys, where: str) -> None:
        require_curve()
        self.keys = keys
        self.as_member = CurvePair.of_member(keys)
        self.refusals = Refusals(where)
        roles = {keys.member_public: MEMBER, **{key: CLIENT for key in keys.clients.values()}}
        self._auth = _RoleAuthenticator(context, roles)
        self._auth.start()
        self._auth.configure_curve_callback(ANYONE_DOMAIN, _Admits(roles, frozenset({MEMBER, CLIENT})))
        self._auth.configure_curve_callback(MEMBERS_DOMAIN, _Admits(roles, frozenset({MEMBER})))
        self._context = context
        self._lock = threading.Lock()
        self._watching: list[tuple[zmq.Socket, str]] = []  # monitor sockets, not yet polled
        self._stopping = threading.Event()
        self._watcher = threading.Thread(target=self._watch, name="yaddb-curve-watch", daemon=True)
        self._watcher.start()

    def server(self, members_only: bool = False) -> SecureSocket:
        """What makes a bound socket a CURVE server admitting clients and members (or, for a
        write log, members only), its failed handshakes counted."""
        def secure(sock: zmq.Socket) -> None:
            sock.curve_server = True
            sock.curve_publickey = self.keys.member_public
            sock.curve_secretkey = self.keys.member_secret
            sock.zap_domain = (MEMBERS_DOMAIN if members_only else ANYONE_DOMAIN).encode()
            self._monitor(sock, "write-log port" if members_only else "request port")
        return secure

    def _monitor(self, sock: zmq.Socket, what: str) -> None:
        address = f"inproc://yaddb-curve-monitor-{next(_monitor_ids)}"
        sock.monitor(address, HANDSHAKE_FAILURES | zmq.EVENT_MONITOR_STOPPED)
        pair = self._context.socket(zmq.PAIR)
        pair.connect(address)
        with self._lock:  # handed to the watcher thread (the lock is the memory barrier)
            self._watching.append((pair, what))

    def _watch(self) -> None:
        poller = zmq.Poller()
        watched: dict[zmq.Socket, str] = {}
        try:
            while not self._stopping.is_set():
                with self._lock:
                    new, self._watching = self._watching, []
                for pair, what in new:
                    watched[pair] = what
                    poller.register(pair, zmq.POLLIN)
                if not watched:  # an empty poll returns at once: it would spin
                    self._stopping.wait(WATCH_POLL_MS / 1000)
                    continue
                for pair, _ in poller.poll(WATCH_POLL_MS):
                    event = recv_monitor_message(pair)
                    if event["event"] == zmq.EVENT_MONITOR_STOPPED:  # its socket closed
                        poller.unregister(pair)
                        pair.close(linger=0)
                        del watched[pair]
                    else:
                        self._note_handshake(event, watched[pair])
        finally:
            with self._lock:
                leftover, self._watching = self._watching, []
            for pair in list(watched) + [pair for pair, _ in leftover]:
                pair.close(linger=0)

    def _note_handshake(self, event: dict, what: str) -> None:
        if event["event"] == zmq.EVENT_HANDSHAKE_FAILED_AUTH:
            self.refusals.note("unknown_key", f"a key not in the cluster's keys on the {what}")
        else:
            self.refusals.note("handshake", f"a peer without the cluster's CURVE keys, or not "
                                            f"speaking ZeroMQ, on the {what}")

    def close(self) -> None:
        self._stopping.set()
        self._watcher.join(5)
        self._auth.stop()


def role_of(frame: zmq.Frame) -> Optional[str]:
    """The role the authenticator gave a message's connection; None without CURVE."""
    try:
        return frame.get("User-Id")
    except zmq.ZMQError:  # not a CURVE connection (inproc, or a plain socket)
        return None


def speaks_curve(context: zmq.Context, endpoint: str, pair: CurvePair, timeout: float) -> bool:
    """Whether the server at `endpoint` takes CURVE (True) or plain (False) connections. A
    router with keys serves plain clients on loopback and CURVE ones beyond it (one socket
    cannot take both), so on loopback a CURVE handshake is tried: the server refusing its
    mechanism means plain. No plain try reaches a CURVE server (every keyed node counts
    those). Undecided within `timeout`: True (a later call says what is wrong)."""
    if endpoint.startswith("inproc://"):  # no handshake in-process: either works
        return False
    if not is_loopback(host_of(endpoint)):
        return True
    sock = context.socket(zmq.DEALER)
    sock.linger = 0
    pair.secure_client(sock)
    address = f"inproc://yaddb-curve-probe-{next(_monitor_ids)}"
    sock.monitor(address, zmq.EVENT_HANDSHAKE_SUCCEEDED | HANDSHAKE_FAILURES)
    events = context.socket(zmq.PAIR)
    events.linger = 0
    events.connect(address)
    try:
        sock.connect(endpoint)
        if events.poll(max(1, int(timeout * 1000))):
            return recv_monitor_message(events)["event"] == zmq.EVENT_HANDSHAKE_SUCCEEDED
        return True
    finally:
        sock.close(linger=0)
        events.close(linger=0)
