"""The node's event loop: take every request waiting on the ROUTER and on the same-machine
socket (transport/local.py), handle them as one round, send the replies. The loop owns its
sockets; everything it decides is in NodeHandler."""
from __future__ import annotations

import logging
import threading
import time
from typing import Optional

import zmq

from yaddb.errors import Unavailable
from yaddb.node.handler import NodeHandler, request_id_of
from yaddb.replication.concern import Held, release
from yaddb.replication.messages import HEARTBEAT_S
from yaddb.limits import max_message_bytes
from yaddb.transport.curve import CLIENT, MEMBER, Security, role_of
from yaddb.transport.local import LocalPeer, LocalServer, local_name
from yaddb.transport.protocol import encode_error
from yaddb.transport.sockets import (NOBLOCK, publisher_socket, readable, recv_message,
                                     send_routed, server_socket)

log = logging.getLogger(__name__)

MAX_ROUND = 1024       # requests handled per round: bounds one round's latency
POLL_MS = 100          # how often the loop looks at its stop flag when idle
# A master publishes at most one write-log message per this many ms, merging the rounds in
# between: under load one message (and one I/O-thread hand-off per slave) covers many rounds;
# a write after a quiet spell goes out at once, and a write waiting on its write concern goes
# out with its round. It bounds what this adds to replication lag. 5 rather than 1: a slave
# on the same 2 CPUs then spends about half the CPU per write (12-15 against 25-30 us), and
# bench_cluster's paired ratios to Redis were as good or better in every pair of runs
# (8 clients' sets 0.81/0.88/0.98 against 0.74/0.69/0.91; mset 0.85/0.80 against 0.77/0.77).
COALESCE_MS = 5


class NodeServer:
    """Serve `handler` on a ROUTER bound to `endpoint` until `stop()`."""

    def __init__(self, handler: NodeHandler, endpoint: str,
                 context: Optional[zmq.Context] = None, pub_endpoint: Optional[str] = None,
                 security: Optional[Security] = None) -> None:
        """A master (handler.source set) also publishes its writes on a PUB at pub_endpoint.
        With `security`, both ports take CURVE peers only, and each request's role (member
        or client) goes to the handler with it."""
        self.handler = handler
        self.security = security
        self.endpoint = endpoint
        self.pub_endpoint = pub_endpoint
        self._published_at = 0.0
        self._timeout_ms = POLL_MS  # how long the loop waits for a request
        self._local: Optional[LocalServer] = None
        self._ask_router = True  # whether the ROUTER may hold requests its FD will not tell of
        self._context = context or zmq.Context.instance()
        self._stopping = threading.Event()
        self.ready = threading.Event()   # set once the socket is bound
        self.dropped_replies = 0
        self._held: list[tuple[list[bytes], Held]] = []  # (route, reply) waiting on members
        self._pub: Optional[zmq.Socket] = None
        self._publishing = None  # the ReplicationSource whose writes _pub carries

    def stop(self) -> None:
        self._stopping.set()

    def serve(self) -> None:
        security = self.security
        sock = server_socket(self._context, self.endpoint, self.handler.max_value_bytes,
                             security and security.server())
        scheme, _, address = self.endpoint.partition("://")
        self._local = LocalServer(local_name(address) if scheme == "tcp" else None,
                                  sock.getsockopt(zmq.FD),
                                  max_message_bytes(self.handler.max_value_bytes),
                                  self.handler.refusals)
        try:
            if self.handler.source is not None:
                self._open_publisher()
            self.ready.set()
            while not self._stopping.is_set():
                # The ROUTER's FD only says that its state may have changed, and only once
                # it was asked (EVENTS) since it last said no and was not used since: the
                # loop blocks only after it said no, and asks again only when told to.
                waiting = self._ask_router and readable(sock)
                self._ask_router = waiting
                arrived = self._local.wait(0.0 if waiting else self._timeout_ms / 1000)
                if not waiting and self._local.zmq_signaled:
                    waiting = readable(sock)
                if waiting or arrived:
                    self._round(sock, arrived, waiting)
                if self.handler.source is not self._publishing:  # the role changed
                    self._switch_publisher(sock)
                if self._pub is not None:
                    self._publish(self._pub)
                if self._held:
                    self._release_held(sock)
            self._refuse_waiting(sock)
        finally:
            self._local.close()
            sock.close()
            if self._pub is not None:
                self._pub.close()

    def _open_publisher(self) -> None:
        self._pub = publisher_socket(self._context, self.pub_endpoint,
                                     self.security and self.security.server(members_only=True))
        self._publishing = self.handler.source

    def _switch_publisher(self, sock: zmq.Socket) -> None:
        """A promoted node binds its write-log port; one that stepped down answers the writes
        it still held (it will not hear their confirmations now) and closes the port."""
        if self._pub is not None:
            now = time.monotonic()
            for route, held in self._held:  # it stepped down: not acknowledged (concern.py)
                self._send(sock, route, release(held, None, now))
            self._held = []
            self._pub.close()
            self._pub = self._publishing = None
        if self.handler.source is not None:
            try:
                self._open_publisher()
            except zmq.ZMQError as exc:  # tried again after the next request or poll
                log.error("cannot bind the write log on %s: %s", self.pub_endpoint, exc)

    def _publish(self, pub: zmq.Socket) -> None:
        """Durable writes waiting, at most once per COALESCE_MS; a heartbeat instead when
        nothing went out for HEARTBEAT_S."""
        outbox = self.handler.outbox
        now = time.monotonic()
        if outbox:
            # Writes waiting on their write concern go out at once: merging would add to
            # their wait what it saves the slaves.
            if now - self._published_at < COALESCE_MS / 1000 and not self._held:
                self._timeout_ms = COALESCE_MS  # to publish them even if no request comes
                return
            for message in self.handler.source.publish(outbox, ack_wanted=bool(self._held)):
                self._send_published(pub, message)
            outbox.clear()
            self._timeout_ms = POLL_MS
        elif now - self._published_at >= HEARTBEAT_S:
            self._send_published(pub, self.handler.source.heartbeat())
        else:
            return
        self._published_at = now

    def _send_published(self, pub: zmq.Socket, message: bytes) -> None:
        pub.send(message, zmq.NOBLOCK)  # a PUB drops at its HWM, never blocks

    def _round(self, sock: zmq.Socket, arrived: list[tuple[LocalPeer, bytes]],
               waiting: bool) -> None:
        """Handle the local messages `arrived` and, when the ROUTER said it has some
        (`waiting`), every request waiting there, as one round.

        A ROUTER message's last frame is the request; the frames before it are its route (the
        peer's id, and any ids a router in between added), sent back in front of the reply.
        A local message's route is its peer. With CURVE, ROUTER messages come as zmq.Frames,
        whose properties say the sender's role; a local peer has the client role.
        """
        routes: list = [peer for peer, _ in arrived]
        frames: list[bytes] = [frame for _, frame in arrived]
        secure = self.security is not None
        roles: Optional[list] = [CLIENT] * len(frames) if secure or frames else None
        while waiting and len(frames) < MAX_ROUND:
            message = recv_message(sock, NOBLOCK, not secure)
            if secure:
                routes.append([part.bytes for part in message[:-1]])
                frames.append(message[-1].bytes)
                roles.append(role_of(message[-1]))
            else:
                routes.append(message[:-1])
                frames.append(message[-1])
                if roles is not None:
                    roles.append(MEMBER)  # a plain ROUTER: every peer may do everything
            waiting = readable(sock)
        if waiting:  # MAX_ROUND reached: the rest waits for the next round
            self._ask_router = True
        for route, reply in zip(routes, self.handler.handle(frames, roles)):
            if type(reply) is bytes:
                self._send(sock, route, reply)
            elif reply is not None:  # a write waiting for its members (None: no reply at all)
                self._held.append((route, reply))

    def _release_held(self, sock: zmq.Socket) -> None:
        """Send the held replies whose writes enough members confirmed, or whose time ran out."""
        now = time.monotonic()
        waiting = []
        for route, held in self._held:
            frame = self.handler.release(held, now)
            if frame is None:
                waiting.append((route, held))
            else:
                self._send(sock, route, frame)
        self._held = waiting

    def _refuse_waiting(self, sock: zmq.Socket) -> None:
        """Requests that arrived as the node stopped get an answer, not silence."""
        for route, held in self._held:  # forced: the deadline is now
            self._send(sock, route, self.handler.release(held._replace(deadline=0.0), time.monotonic()))
        self._held = []
        refusal = Unavailable("the node is shutting down; retry on another replica or later")
        while True:
            try:
                message = recv_message(sock, NOBLOCK)
            except zmq.Again:
                return
            self._send(sock, message[:-1], encode_error(request_id_of(message[-1]), refusal))

    def _send(self, sock: zmq.Socket, route, reply: bytes) -> None:
        """To a ROUTER peer (route: its frames) or to a local peer."""
        if type(route) is LocalPeer:
            self._local.send(route, reply)
            return
        self._ask_router = True  # a send may take in the signal of a message that arrived
        try:
            send_routed(sock, route, reply)
        except zmq.ZMQError as exc:  # the client left (EHOSTUNREACH) or stopped reading (EAGAIN)
            self.dropped_replies += 1
            log.debug("reply to a departed client dropped: %s", exc)
