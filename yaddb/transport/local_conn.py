"""A client's connection to a node on its own machine, over the node's same-machine socket
(transport/local.py): a RequestConnection, as client_conn.Connection is, so a Client and
`call_each` use either."""
from __future__ import annotations

import socket
import struct
from typing import Optional

from yaddb.errors import BadMessage
from yaddb.transport.client_conn import NotSent, RequestConnection
from yaddb.transport.local import LENGTH, FramingError, local_name, same_user, take_messages
from yaddb.transport.protocol import decode_reply

_TIMEVAL = struct.Struct("ll")
RECEIVE_BYTES = 256 << 10
MAX_REPLY_BYTES = 1 << 31


def _timeval(ms: int) -> bytes:
    return _TIMEVAL.pack(ms // 1000, ms % 1000 * 1000)


class LocalConnection(RequestConnection):
    """A blocking socket whose kernel timeouts (SO_RCVTIMEO, SO_SNDTIMEO) bound each wait:
    one system call per send or receive, where a socket with a Python timeout polls first."""

    def __init__(self, address: str, name: str, timeout: float) -> None:
        super().__init__(f"tcp://{address}", timeout)
        self.name = name
        self._sock: Optional[socket.socket] = None
        self._received = bytearray()
        self._waits_ms: Optional[int] = None  # the socket's timeouts, set when they change

    @classmethod
    def open(cls, address: str, timeout: float) -> Optional["LocalConnection"]:
        """A connection to the node at `address` ("host:port") if it runs on this machine as
        this process's user; None otherwise (the caller then uses ZeroMQ)."""
        name = local_name(address)
        if name is None:
            return None
        conn = cls(address, name, timeout)
        try:
            conn._connect()
        except NotSent:
            return None
        return conn

    def _connect(self) -> socket.socket:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.connect(self.name)  # an abstract name: refused at once when nobody listens
            if not same_user(sock):
                raise ConnectionRefusedError("the node's socket belongs to another user")
        except OSError as exc:
            sock.close()
            raise NotSent(self._message(f"could not connect ({exc})")) from None
        self._sock, self._waits_ms = sock, None
        self._received.clear()
        return sock

    def _send(self, frame: bytes, deadline: float, wait_ms: Optional[int] = None) -> None:
        sock = self._sock or self._connect()
        self._set_waits(wait_ms or max(1, self._remaining_ms(deadline)))
        try:
            sock.sendall(LENGTH.pack(len(frame)) + frame)
        except OSError as exc:
            # Not all of it was sent, so the node holds no whole request: nothing applied.
            self.reset()
            raise NotSent(self._message(f"could not send ({exc})")) from None

    def _receive(self, request_id: int, deadline: float, wait_ms: Optional[int] = None):
        """The reply to `request_id`; a late reply to an abandoned request is skipped."""
        sock = self._sock
        if sock is None:
            raise self._timeout("no reply (not connected)")
        received = self._received
        wait_ms = wait_ms or self._remaining_ms(deadline)
        messages = self._take(received) if received else []
        while True:
            for message in messages:
                try:
                    reply = decode_reply(message)
                except BadMessage:
                    continue
                if reply.request_id == request_id:
                    return reply
            if wait_ms <= 0:
                self.reset()
                raise self._timeout("no reply")
            self._set_waits(wait_ms)
            try:
                data = sock.recv(RECEIVE_BYTES)
            except OSError as exc:  # EAGAIN once SO_RCVTIMEO runs out, or a reset
                self.reset()
                raise self._timeout("no reply" if isinstance(exc, BlockingIOError)
                                    else f"no reply ({exc})") from None
            if not data:
                self.reset()
                raise self._timeout("no reply (the node closed the connection)")
            if not received and len(data) >= 4 and LENGTH.unpack_from(data)[0] == len(data) - 4:
                messages = [data[4:]]  # the usual case, one whole reply: no buffering
            else:
                received += data
                messages = self._take(received)
            wait_ms = self._remaining_ms(deadline)

    def _take(self, received: bytearray) -> list[bytes]:
        try:
            return take_messages(received, MAX_REPLY_BYTES)
        except FramingError as exc:
            self.reset()
            raise self._timeout(f"an unreadable reply ({exc})") from None

    def _set_waits(self, ms: int) -> None:
        if self._waits_ms != ms and self._sock is not None:
            value = _timeval(ms)
            self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, value)
            self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, value)
            self._waits_ms = ms

    def _message(self, what: str) -> str:
        return (f"{what} from {self.endpoint} (same-machine socket) within {self.timeout:g} s; "
                f"is the node running?")

    def reset(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        self._received.clear()
