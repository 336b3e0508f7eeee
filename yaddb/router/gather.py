"""Multi-key requests through the router: split by partition, answered once every part is in."""
from __future__ import annotations

from typing import Optional

from yaddb.errors import YaddbError
from yaddb.transport.protocol import Reply, encode_error, encode_reply


class Gather:
    """The answer to one client request built from its partitions' replies."""

    def __init__(self, route: list[bytes], request_id: int, op: str, size: int, parts: int) -> None:
        self.route = route
        self.request_id = request_id
        self.op = op
        self.results: list = [None] * size
        self.remaining = parts
        self.done = False

    def fail(self, error: YaddbError) -> Optional[bytes]:
        """The error reply, unless the client was already answered."""
        if self.done:
            return None
        self.done = True
        return encode_error(self.request_id, error)

    def add(self, positions: list[int], reply: Reply) -> Optional[bytes]:
        """Take one partition's reply; returns the client's reply once it is complete."""
        if self.done:
            return None
        try:
            payload = reply.result()
        except YaddbError as exc:
            return self.fail(exc)  # writes to other partitions may have been applied: said in README
        if self.op != "mset":
            for position, value in zip(positions, payload):
                self.results[position] = value
        self.remaining -= 1
        if self.remaining:
            return None
        self.done = True
        return encode_reply(self.request_id, True if self.op == "mset" else self.results)
