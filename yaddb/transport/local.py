"""Same-machine clients over a Unix stream socket, beside a node's ZeroMQ ROUTER.

ZeroMQ hands each message to an I/O thread on both sides, four thread wake-ups per round trip
where a plain socket needs none: on a machine with two cores they cost more than the request
itself (a 120-byte echo between two processes: 28,000 round trips/s over ZeroMQ, 110,000 over
TCP, 154,000 over a Unix socket; bench/bench_transport.py). So a node also listens on an
abstract Unix socket named after its address (`local_name`), for clients on its own machine.

Who may connect: both ends read the other's user from the kernel (SO_PEERCRED) and talk only
to their own user, the one that may read the node's data and keys anyway; such a peer gets
the client role (data operations only, CONTRACT.md section 8). An abstract name needs no
file and vanishes with its socket, so a killed node leaves nothing behind.

A message on the stream is its protocol frame (transport/protocol.py) after its length, a
4-byte big-endian number.
"""
from __future__ import annotations

import logging
import os
import select
import socket
import struct
import sys
from typing import Optional

log = logging.getLogger(__name__)

LENGTH = struct.Struct(">I")
_CREDENTIALS = struct.Struct("3i")  # struct ucred: pid, uid, gid
MAX_PEERS = 1024
RECEIVE_BYTES = 256 << 10
MAX_QUEUED_BYTES = 64 << 20  # replies waiting for a peer that does not read; past it, dropped


class FramingError(ValueError):
    """A peer's stream is not a sequence of length-prefixed messages we accept."""


def local_name(address: str) -> Optional[str]:
    """The abstract socket name of the node at `address` ("host:port"), or None on a system
    without abstract Unix sockets (anything but Linux)."""
    if not sys.platform.startswith("linux"):
        return None
    return "\0yaddb-node/" + address


def take_messages(buffer: bytearray, max_bytes: int) -> list[bytes]:
    """The whole messages at the front of `buffer`, removed from it; a partial one stays.
    Raises FramingError for a length over `max_bytes`."""
    messages = []
    start, end = 0, len(buffer)
    while end - start >= 4:
        (length,) = LENGTH.unpack_from(buffer, start)
        if length > max_bytes:
            raise FramingError(f"a message of {length} bytes, over the {max_bytes} allowed")
        if end - start - 4 < length:
            break
        messages.append(bytes(buffer[start + 4:start + 4 + length]))
        start += 4 + length
    if start:
        del buffer[:start]
    return messages


def peer_uid(sock: socket.socket) -> int:
    return _CREDENTIALS.unpack(sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED,
                                               _CREDENTIALS.size))[1]


def same_user(sock: socket.socket) -> bool:
    """Whether the process at the other end runs as this process's user (says the kernel)."""
    return peer_uid(sock) == os.geteuid()


class LocalPeer:
    """One accepted connection: what it sent and not yet framed, what we could not yet send."""

    __slots__ = ("sock", "fd", "received", "unsent", "unsent_bytes")

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.fd = sock.fileno()
        self.received = bytearray()
        self.unsent: list[bytes] = []
        self.unsent_bytes = 0


class LocalServer:
    """Waits on a ZeroMQ socket's FD and on local peers at once, so one thread serves both.

    `wait` returns the local messages that arrived as (peer, frame) pairs, and sets
    `zmq_signaled` when the ZeroMQ socket's FD fired; whether that socket has messages is
    for the caller to ask it (its FD only says its state changed).
    """

    def __init__(self, name: Optional[str], zmq_fd: int, max_message_bytes: int,
                 refusals=None) -> None:
        """name: the abstract name to listen on (None: ZeroMQ only). A name another process
        holds is logged and skipped: the node then serves over ZeroMQ alone."""
        self.max_message_bytes = max_message_bytes
        self.refusals = refusals
        self.peers: dict[int, LocalPeer] = {}
        self.zmq_signaled = False
        self._zmq_fd = zmq_fd
        self._epoll = select.epoll()
        self._epoll.register(zmq_fd, select.EPOLLIN)
        self._listener: Optional[socket.socket] = None
        if name is not None:
            listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                listener.bind(name)
                listener.listen(128)
            except OSError as exc:
                listener.close()
                log.warning("no same-machine socket (%s): %s; clients use ZeroMQ", name[1:], exc)
            else:
                listener.setblocking(False)
                self._listener = listener
                self._epoll.register(listener.fileno(), select.EPOLLIN)

    @property
    def listening(self) -> bool:
        return self._listener is not None

    def wait(self, timeout_s: float) -> list[tuple[LocalPeer, bytes]]:
        arrived: list[tuple[LocalPeer, bytes]] = []
        self.zmq_signaled = False
        for fd, events in self._epoll.poll(timeout_s):
            peer = self.peers.get(fd)
            if peer is None:
                if fd == self._zmq_fd:
                    self.zmq_signaled = True
                elif self._listener is not None and fd == self._listener.fileno():
                    self._accept()
                continue
            if events & select.EPOLLOUT:
                self._flush(peer)
            if events & (select.EPOLLIN | select.EPOLLHUP | select.EPOLLERR) and self._has(peer):
                self._receive(peer, arrived)
        return arrived

    def send(self, peer: LocalPeer, message: bytes) -> None:
        """Queue a reply; it goes out now if the peer's socket takes it."""
        if not self._has(peer):
            return  # it left while its request was handled
        data = LENGTH.pack(len(message)) + message
        if peer.unsent:
            self._queue(peer, data)
            return
        try:
            sent = peer.sock.send(data)
        except BlockingIOError:
            sent = 0
        except OSError:
            self._drop(peer)
            return
        if sent < len(data):
            self._queue(peer, data[sent:])
            if self._has(peer):
                self._epoll.modify(peer.fd, select.EPOLLIN | select.EPOLLOUT)

    def close(self) -> None:
        for peer in list(self.peers.values()):
            self._drop(peer)
        if self._listener is not None:
            self._listener.close()
        self._epoll.close()

    def _has(self, peer: LocalPeer) -> bool:
        # By identity: a departed peer's descriptor number may already serve a newer one.
        return self.peers.get(peer.fd) is peer

    def _accept(self) -> None:
        for _ in range(64):  # bounded: the loop has requests to serve meanwhile
            try:
                sock, _ = self._listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # out of descriptors: refuse until some are freed
                log.warning("cannot accept a same-machine client: %s", exc)
                return
            if not same_user(sock):
                self._refuse(sock, "another_users_process", f"uid {peer_uid(sock)}")
            elif len(self.peers) >= MAX_PEERS:
                self._refuse(sock, "local_peers_over_limit", f"{MAX_PEERS} connected")
            else:
                sock.setblocking(False)
                peer = LocalPeer(sock)
                self.peers[peer.fd] = peer
                self._epoll.register(peer.fd, select.EPOLLIN)

    def _refuse(self, sock: socket.socket, reason: str, detail: str) -> None:
        sock.close()
        if self.refusals is not None:
            self.refusals.note(reason, detail + " on the same-machine socket")
        else:
            log.warning("refused a same-machine client: %s (%s)", reason.replace("_", " "), detail)

    def _receive(self, peer: LocalPeer, arrived: list) -> None:
        try:
            data = peer.sock.recv(RECEIVE_BYTES)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:
            self._drop(peer)
            return
        peer.received += data
        try:
            for message in take_messages(peer.received, self.max_message_bytes):
                arrived.append((peer, message))
        except FramingError as exc:
            # As libzmq does with MAXMSGSIZE: the peer is cut off before it fills our memory.
            log.warning("dropped a same-machine client: %s", exc)
            self._drop(peer)

    def _queue(self, peer: LocalPeer, data: bytes) -> None:
        peer.unsent.append(data)
        peer.unsent_bytes += len(data)
        if peer.unsent_bytes > MAX_QUEUED_BYTES:
            log.warning("dropped a same-machine client that reads no replies (%d bytes waiting)",
                        peer.unsent_bytes)
            self._drop(peer)

    def _flush(self, peer: LocalPeer) -> None:
        data = b"".join(peer.unsent)
        try:
            sent = peer.sock.send(data)
        except BlockingIOError:
            return
        except OSError:
            self._drop(peer)
            return
        rest = data[sent:]
        peer.unsent = [rest] if rest else []
        peer.unsent_bytes = len(rest)
        if not rest:
            self._epoll.modify(peer.fd, select.EPOLLIN)

    def _drop(self, peer: LocalPeer) -> None:
        if self._has(peer):
            del self.peers[peer.fd]
            self._epoll.unregister(peer.fd)
            peer.sock.close()
