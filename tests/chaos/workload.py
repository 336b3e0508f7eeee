"""The chaos test's clients: threads in this process writing unique values, deleting and reading
a small set of keys (so operations on one key overlap), each operation recorded in a History.

Half the clients use the default Client, which takes the partition map from the router and
sends one-key calls straight to the master (reads too); the other half go through the router
(direct=False), whose reads alternate between the master and its ready slaves, so stale reads
from slaves are part of the history too. The first half writes and deletes with the default
write concern (w=1), the second with w="majority" (a master and one of its two slaves): each
way of routing meets each concern. A ReplicationTimeout (applied on the master, not confirmed
by enough slaves in time) is recorded as unknown.
"""
from __future__ import annotations

import random
import threading
from typing import Optional

from yaddb import Client
from tests.chaos.history import DELETE, READ, WRITE, History

WRITE_SHARE, DELETE_SHARE = 0.5, 0.15  # the rest are reads
PACE_S = 0.005        # between one client's operations: enough load, and CPU left for the nodes
MAX_OPS = 200_000     # per client: a bound on the loop whatever the run's length
JOIN_S = 30.0


class Workload:
    def __init__(self, history: History, endpoint: str, seed: int, clients: int = 4,
                 keys: int = 24, timeout: float = 1.0) -> None:
        self.history = history
        self.endpoint = endpoint
        self.seed = seed
        self.keys = [b"key-%02d" % n for n in range(keys)]
        self.timeout = timeout
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._client, args=(n,), name=f"chaos-c{n}",
                                          daemon=True) for n in range(clients)]
        self.errors: list[BaseException] = []

    def start(self) -> "Workload":
        for thread in self._threads:
            thread.start()
        return self

    def stop(self) -> None:
        """Stop the clients; each finishes its operation (bounded by the client's timeout)."""
        self._stop.set()
        for thread in self._threads:
            thread.join(JOIN_S)
        stuck = [thread.name for thread in self._threads if thread.is_alive()]
        if stuck:
            raise AssertionError(f"client threads {stuck} did not stop within {JOIN_S:g} s")
        if self.errors:
            raise self.errors[0]

    def _client(self, number: int) -> None:
        rng = random.Random(self.seed * 1000 + number)
        name = f"c{number}"
        concern = "majority" if number >= len(self._threads) // 2 else None
        try:
            with Client(self.endpoint, timeout=self.timeout, direct=number % 2 == 0,
                        w=concern or 1) as client:
                for count in range(MAX_OPS):
                    if self._stop.is_set():
                        return
                    self._one(client, name, count, rng, concern)
                    self._stop.wait(PACE_S)
        except BaseException as exc:  # a bug of the test: the main thread raises it
            self.errors.append(exc)

    def _one(self, client: Client, name: str, count: int, rng: random.Random,
             concern: Optional[str]) -> None:
        key = rng.choice(self.keys)
        dice = rng.random()
        if dice < WRITE_SHARE:
            value = f"{name}-{count}".encode()  # unique: it names this write
            self.history.run(name, WRITE, key, value, lambda: client.set(key, value), concern)
        elif dice < WRITE_SHARE + DELETE_SHARE:
            self.history.run(name, DELETE, key, None, lambda: client.delete(key), concern)
        else:
            self.history.run(name, READ, key, None, lambda: _value(client.get(key)))


def _value(item) -> Optional[bytes]:
    return None if item is None else item.value
