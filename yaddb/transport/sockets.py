"""Every ZeroMQ socket YADDB opens is configured here, before it binds or connects.

Most options only apply to later bind/connect calls, so each helper sets all of them first.
"""
from __future__ import annotations

from typing import Callable, Optional

import zmq

from yaddb.limits import max_message_bytes
from yaddb.placement import BadAddress

# Applied before a bind or connect: CURVE keys and the ZAP domain (transport/curve.py), or
# nothing for a plain socket.
Secure = Optional[Callable[[zmq.Socket], None]]

HEARTBEAT_MS = 1000        # ZMTP pings: TCP alone can take many minutes to notice a dead peer
HEARTBEAT_TIMEOUT_MS = 3000
RECONNECT_MS = 100
RECONNECT_MAX_MS = 2000    # back off, so clients do not hammer a dead node
HWM = 10_000               # messages queued per peer before sends block or drop


def _common(sock: zmq.Socket, secure: Secure) -> None:
    # Close must never wait for unsent messages to a peer that is gone (default is forever).
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.SNDHWM, HWM)
    sock.setsockopt(zmq.RCVHWM, HWM)
    sock.setsockopt(zmq.HEARTBEAT_IVL, HEARTBEAT_MS)
    sock.setsockopt(zmq.HEARTBEAT_TIMEOUT, HEARTBEAT_TIMEOUT_MS)
    sock.setsockopt(zmq.HEARTBEAT_TTL, HEARTBEAT_TIMEOUT_MS)
    if secure is not None:
        secure(sock)


def server_socket(ctx: zmq.Context, endpoint: str, max_value_bytes: int,
                  secure: Secure = None) -> zmq.Socket:
    """A bound ROUTER for requests."""
    sock = ctx.socket(zmq.ROUTER)
    _common(sock, secure)
    # A peer that sends a bigger frame is disconnected by libzmq before it fills our memory.
    sock.setsockopt(zmq.MAXMSGSIZE, max_message_bytes(max_value_bytes))
    # A reply to a client that is gone fails loudly (EHOSTUNREACH) instead of vanishing.
    sock.setsockopt(zmq.ROUTER_MANDATORY, 1)
    sock.bind(endpoint)
    return sock


def client_socket(ctx: zmq.Context, endpoint: str, secure: Secure = None) -> zmq.Socket:
    """A connected DEALER for requests to a node or router."""
    sock = ctx.socket(zmq.DEALER)
    _common(sock, secure)
    # Queue only to completed connections: a dead endpoint then times out instead of hiding
    # requests in a pipe that may never connect.
    sock.setsockopt(zmq.IMMEDIATE, 1)
    sock.setsockopt(zmq.RECONNECT_IVL, RECONNECT_MS)
    sock.setsockopt(zmq.RECONNECT_IVL_MAX, RECONNECT_MAX_MS)
    sock.setsockopt(zmq.CONNECT_TIMEOUT, HEARTBEAT_TIMEOUT_MS)
    try:
        sock.connect(endpoint)
    except zmq.ZMQError as exc:
        sock.close(linger=0)
        raise BadAddress(f"cannot connect to {endpoint[:80]!r} ({exc.strerror}); an endpoint "
                         f"is tcp://HOST:PORT") from None
    return sock


PUB_HWM = 100_000          # updates queued per slave; past it the PUB drops and slaves catch up


def publisher_socket(ctx: zmq.Context, endpoint: str, secure: Secure = None) -> zmq.Socket:
    """A bound PUB for a master's write log. A slow slave's queue overflows into drops (never
    a blocked master); slaves see the gap in sequence numbers and catch up."""
    sock = ctx.socket(zmq.PUB)
    _common(sock, secure)
    sock.setsockopt(zmq.SNDHWM, PUB_HWM)
    sock.bind(endpoint)
    return sock


def subscriber_socket(ctx: zmq.Context, endpoint: str, secure: Secure = None) -> zmq.Socket:
    """A SUB to a master's write log, subscribed to everything it publishes."""
    sock = ctx.socket(zmq.SUB)
    _common(sock, secure)
    sock.setsockopt(zmq.RCVHWM, PUB_HWM)
    sock.setsockopt(zmq.RECONNECT_IVL, RECONNECT_MS)
    sock.setsockopt(zmq.RECONNECT_IVL_MAX, RECONNECT_MAX_MS)
    sock.setsockopt(zmq.SUBSCRIBE, b"")
    sock.connect(endpoint)
    return sock


# Plain ints: pyzmq's flag enums cost a Python call each time they are combined or compared,
# which on a request's path adds up to microseconds (the node and router send and receive
# several frames per request).
_MORE = int(zmq.SNDMORE | zmq.NOBLOCK)
_LAST = int(zmq.NOBLOCK)
_EVENTS = int(zmq.EVENTS)
_POLLIN = int(zmq.POLLIN)
NOBLOCK = int(zmq.NOBLOCK)


def send_routed(sock: zmq.Socket, route: list[bytes], frame: bytes) -> None:
    """The route's frames then the message, never blocking (zmq.Again when it cannot be
    queued); cheaper than send_multipart, which builds a list and combines enum flags."""
    for part in route:
        sock.send(part, _MORE)
    sock.send(frame, _LAST)


def recv_message(sock: zmq.Socket, flags: int = 0, copy: bool = True) -> list:
    """Every frame of the next message: bytes, or with copy=False zmq.Frames. Received as
    Frames either way, whose `more` costs no getsockopt call (a third cheaper per message
    than recv_multipart, measured)."""
    frame = sock.recv(flags, False)
    parts = [frame]
    while frame.more:
        frame = sock.recv(flags, False)
        parts.append(frame)
    return [part.bytes for part in parts] if copy else parts


def readable(sock: zmq.Socket) -> bool:
    """A message is waiting: cheaper than a receive that raises zmq.Again."""
    return bool(sock.getsockopt(_EVENTS) & _POLLIN)
