"""Connections to a node or router: request ids, deadlines and Lazy Pirate retries, over a
DEALER here or a same-machine socket (local_conn.py)."""
from __future__ import annotations

import random
import threading
import time
from typing import Any, Optional

import zmq

from yaddb.errors import BadMessage, YaddbError, YaddbTimeout
from yaddb.transport.protocol import decode_reply, encode_request
from yaddb.transport.sockets import NOBLOCK, Secure, client_socket


class NotSent(YaddbTimeout):
    """No connection could be made within the time, so the request never left: safe to resend."""


class Interrupted(YaddbTimeout):
    """The caller's `interrupt` event was set while a call waited: its owner is stopping."""


INTERRUPT_CHECK_MS = 100  # how often a wait looks at the interrupt event


class RequestConnection:
    """A connection to a node or router, whatever carries it: request ids, and a call's
    attempts within its time. A subclass sends a frame (`_send`), receives the reply to a
    request id (`_receive`) and drops its socket (`reset`). Not thread-safe: the Client above
    it serialises calls."""

    def __init__(self, endpoint: str, timeout: float) -> None:
        self.endpoint = endpoint
        self.timeout = timeout
        self._timeout_ms = max(1, int(timeout * 1000))
        self._next_id = random.randrange(1 << 30)  # a restarted client never reuses recent ids

    def call(self, op: str, args: list, retries: int = 0, extra_time: float = 0.0) -> Any:
        """Send one request and return its reply's payload (raising the error it carries).

        The whole call takes at most `timeout` (plus `extra_time`, for a write its node may
        hold that long): it is split between 1 + `retries` attempts.
        After an attempt times out the socket is closed and reopened (a reply to the lost
        request can then never be mistaken for a later one) and the request is sent again.
        """
        attempt_ms = max(1, (self._timeout_ms + int(extra_time * 1000)) // (retries + 1))
        for attempt in range(retries + 1):
            self._next_id += 1
            try:
                return self._round_trip(self._next_id, encode_request(self._next_id, op, args),
                                        attempt_ms).result()
            except YaddbTimeout:
                self.reset()
                if attempt == retries:
                    raise
        raise AssertionError("unreachable")

    def _round_trip(self, request_id: int, frame: bytes, timeout_ms: int):
        deadline = time.monotonic() + timeout_ms / 1000
        self._send(frame, deadline, timeout_ms)
        return self._receive(request_id, deadline, timeout_ms)

    def _send(self, frame: bytes, deadline: float, wait_ms: Optional[int] = None) -> None:
        """Send `frame` by `deadline` (wait_ms: the attempt's whole time, when known), or
        raise NotSent."""
        raise NotImplementedError

    def _receive(self, request_id: int, deadline: float, wait_ms: Optional[int] = None):
        """The reply to `request_id` by `deadline`, or YaddbTimeout."""
        raise NotImplementedError

    def reset(self) -> None:
        raise NotImplementedError

    def close(self) -> None:
        self.reset()

    def _remaining_ms(self, deadline: float) -> int:
        return max(0, int((deadline - time.monotonic()) * 1000))

    def _timeout(self, what: str) -> YaddbTimeout:
        return YaddbTimeout(self._message(what))

    def _message(self, what: str) -> str:
        return (f"{what} from {self.endpoint} within {self.timeout:g} s; is the node "
                f"or router running and reachable?")


class Connection(RequestConnection):
    """One DEALER to a node or router."""

    def __init__(self, endpoint: str, timeout: float,
                 context: Optional[zmq.Context] = None,
                 connect_timeout: Optional[float] = None,
                 interrupt: Optional[threading.Event] = None, secure: Secure = None) -> None:
        """`secure` configures the socket (CURVE keys; transport/curve.py). `connect_timeout` bounds the wait for a connection before NotSent (default: the
        attempt's whole time), for callers with somewhere else to send. Once `interrupt` is
        set, a waiting call raises Interrupted within INTERRUPT_CHECK_MS: a thread that is
        stopping never waits out a peer that does not answer."""
        super().__init__(endpoint, timeout)
        self._interrupt = interrupt
        self._secure = secure
        self._connect_ms = None if connect_timeout is None else max(1, int(connect_timeout * 1000))
        self._context = context or zmq.Context.instance()
        self._sock: Optional[zmq.Socket] = None
        self._rcvtimeo = -1

    def send_only(self, op: str, args: list) -> bool:
        """Send a request that gets no reply (a slave's ack); False if it could not be queued
        (no connection): nothing waits for it, so nothing is lost but its news."""
        self._next_id += 1
        try:
            self._socket().send(encode_request(self._next_id, op, args), NOBLOCK)
        except zmq.Again:
            return False
        return True

    def _send(self, frame: bytes, deadline: float, wait_ms: Optional[int] = None) -> None:
        sock = self._socket()
        try:
            sock.send(frame, NOBLOCK)
        except zmq.Again:  # no connection completed yet (IMMEDIATE): wait for one, within the deadline
            wait_ms = self._remaining_ms(deadline)
            if self._connect_ms is not None:
                wait_ms = min(wait_ms, self._connect_ms)
            if not self._poll(sock, wait_ms, zmq.POLLOUT):
                raise NotSent(self._message("could not connect")) from None
            sock.send(frame, NOBLOCK)

    def _receive(self, request_id: int, deadline: float, timeout_ms: Optional[int] = None):
        """The reply to `request_id`; timeout_ms (default: what is left until the deadline)
        is the socket's receive timeout, kept from call to call when it does not change."""
        sock = self._socket()
        timeout_ms = timeout_ms or max(1, self._remaining_ms(deadline))
        if self._rcvtimeo != timeout_ms:
            sock.setsockopt(zmq.RCVTIMEO, timeout_ms)
            self._rcvtimeo = timeout_ms
        if self._interrupt is not None and not self._poll(sock, timeout_ms, zmq.POLLIN):
            raise self._timeout("no reply")
        while True:
            try:
                frame = sock.recv()  # RCVTIMEO bounds it; one call is cheaper than poll + recv
            except zmq.Again:
                raise self._timeout("no reply") from None
            try:
                reply = decode_reply(frame)
                if reply.request_id == request_id:
                    return reply
            except BadMessage:
                pass  # not ours to understand
            # A late reply to an abandoned request, or garbage: wait on, within the deadline.
            self._rcvtimeo = max(1, self._remaining_ms(deadline))
            sock.setsockopt(zmq.RCVTIMEO, self._rcvtimeo)

    def _poll(self, sock: zmq.Socket, timeout_ms: int, event: int) -> bool:
        """sock.poll, in slices that look at the interrupt event; raises Interrupted."""
        if self._interrupt is None:
            return bool(sock.poll(timeout_ms, event))
        deadline = time.monotonic() + timeout_ms / 1000
        while not self._interrupt.is_set():
            if sock.poll(min(INTERRUPT_CHECK_MS, self._remaining_ms(deadline)), event):
                return True
            if time.monotonic() >= deadline:
                return False
        raise Interrupted(f"a call to {self.endpoint} was interrupted: stopping")

    def _socket(self) -> zmq.Socket:
        if self._sock is None:
            self._sock = client_socket(self._context, self.endpoint, self._secure)
            self._rcvtimeo = -1  # the socket's RCVTIMEO; set before each wait when it differs
        return self._sock

    def reset(self) -> None:
        if self._sock is not None:
            self._sock.close(linger=0)
            self._sock = None


def call_each(calls: list[tuple[RequestConnection, str, list]], extra_time: float = 0.0) -> list[Any]:
    """Send every call, then collect every reply: calls to different nodes take about one
    round trip together. No retries; each connection's timeout (plus `extra_time`) bounds its
    own call. Returns each call's payload, or the YaddbError it raised (NotSent: never sent,
    so nothing was applied; YaddbTimeout: no reply, the connection reset)."""
    outcomes: list[Any] = [None] * len(calls)
    sent = []
    for index, (conn, op, args) in enumerate(calls):
        conn._next_id += 1
        deadline = time.monotonic() + conn.timeout + extra_time
        try:
            conn._send(encode_request(conn._next_id, op, args), deadline)
        except YaddbTimeout as exc:  # NotSent
            outcomes[index] = exc
        else:
            sent.append((index, conn, conn._next_id, deadline))
    for index, conn, request_id, deadline in sent:
        try:
            outcomes[index] = conn._receive(request_id, deadline).result()
        except YaddbTimeout as exc:
            conn.reset()
            outcomes[index] = exc
        except YaddbError as exc:
            outcomes[index] = exc
    return outcomes
