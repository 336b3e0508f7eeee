"""The chaos test's clients: threads in this process writing unique values, deleting and reading
a small set of keys (so operations on one key overlap), each operation recorded in a History.
A tenth of the writes go to a key of their own that nothing writes again, so that the end
shows whether each of them was kept (or rolled back, and said so), not only the last write
of a busy key.

Half the clients use the default Client, which takes the partition map from the router and
sends one-key calls straight to the master (reads too); the other half go through the router
(direct=False), whose reads alternate between the master and its ready slaves, so stale reads
from slaves are part of the history too. The first half writes and deletes with the default
write concern (w=1), the second with w="majority" (a master and one of its two slaves): each
way of routing meets each concern. A ReplicationTimeout (applied on the master, not confirmed
by enough slaves in time) is recorded as unknown.

With `pinned` (a function naming the current master's endpoint, or None), one more client
talks to that one node alone, with w=1, and asks anew every PIN_REFRESH_S (PIN_RETRY_S after
an operation that did not succeed): a client that keeps writing to a master the router may be replacing (cut from
the router and its slaves, say). Its writes there are what a lease must stop, and what a
rollback file must keep when the old master comes back as a slave.
"""
from __future__ import annotations

import random
import threading
import time
from typing import Callable, Optional

from yaddb import Client
from tests.chaos.history import DELETE, OK, READ, WRITE, History, Op

WRITE_SHARE, DELETE_SHARE = 0.5, 0.15  # the rest are reads
FRESH_SHARE = 0.1     # of the writes: to a key of their own, never written again
PACE_S = 0.005        # between one client's operations: enough load, and CPU left for the nodes
MAX_OPS = 200_000     # per client: a bound on the loop whatever the run's length
JOIN_S = 30.0
PIN_REFRESH_S = 1.0   # the pinned client asks which node is master this often
PIN_RETRY_S = 0.1     # and this soon after an operation that did not succeed


class Workload:
    def __init__(self, history: History, endpoint: str, seed: int, clients: int = 4,
                 keys: int = 24, timeout: float = 1.0,
                 pinned: Optional[Callable[[], Optional[str]]] = None) -> None:
        self.history = history
        self.endpoint = endpoint
        self.seed = seed
        self.keys = [b"key-%02d" % n for n in range(keys)]
        self.timeout = timeout
        self.pinned = pinned
        self._stop = threading.Event()
        self._clients = clients
        self._threads = [threading.Thread(target=self._client, args=(n,), name=f"chaos-c{n}",
                                          daemon=True) for n in range(clients)]
        if pinned is not None:
            self._threads.append(threading.Thread(target=self._pinned_client, args=(clients,),
                                                  name=f"chaos-c{clients}", daemon=True))
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
        concern = "majority" if number >= self._clients // 2 else None
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

    def _pinned_client(self, number: int) -> None:
        rng = random.Random(self.seed * 1000 + number)
        name = f"c{number}"
        client: Optional[Client] = None
        ask_at = 0.0  # when to ask again which node is master
        try:
            for count in range(MAX_OPS):
                if self._stop.is_set():
                    return
                if time.monotonic() >= ask_at:
                    ask_at = time.monotonic() + PIN_REFRESH_S
                    endpoint = self.pinned()
                    if client is not None and endpoint != client.endpoint:
                        client.close()
                        client = None
                    if client is None and endpoint is not None:
                        client = Client(endpoint, timeout=self.timeout, direct=False,
                                        read_retries=0)
                    if endpoint is None:  # the router did not say
                        ask_at = time.monotonic() + PIN_RETRY_S
                if client is not None:
                    op = self._one(client, name, count, rng, None)
                    if op.result != OK:  # ask again soon which node is master
                        ask_at = min(ask_at, time.monotonic() + PIN_RETRY_S)
                self._stop.wait(PACE_S)
        except BaseException as exc:  # a bug of the test: the main thread raises it
            self.errors.append(exc)
        finally:
            if client is not None:
                client.close()

    def _one(self, client: Client, name: str, count: int, rng: random.Random,
             concern: Optional[str]) -> Op:
        key = rng.choice(self.keys)
        dice = rng.random()
        if dice < WRITE_SHARE * FRESH_SHARE:
            key = value = f"{name}-{count}".encode()  # nothing replaces it: it must stay
            return self.history.run(name, WRITE, key, value, lambda: client.set(key, value),
                                    concern)
        if dice < WRITE_SHARE:
            value = f"{name}-{count}".encode()  # unique: it names this write
            return self.history.run(name, WRITE, key, value, lambda: client.set(key, value),
                                    concern)
        if dice < WRITE_SHARE + DELETE_SHARE:
            return self.history.run(name, DELETE, key, None, lambda: client.delete(key), concern)
        return self.history.run(name, READ, key, None, lambda: _value(client.get(key)))


def _value(item) -> Optional[bytes]:
    return None if item is None else item.value
