"""What each node says it is, sampled all through a chaos run, for the checker's one-master rule
(checker.check_one_master).

Every PERIOD_S each node is asked for its `stats` and the answer is kept as a RoleSample
(history.py): the time the question left and the time the answer came (this process's
time.monotonic(), the clock the History uses), with the node's role, epoch, whether a router
leases it and how much lease it had left. One thread per node, so a node that does not answer
(stopped, cut off) slows no other node's samples. Unanswered questions are counted, not
recorded: they say nothing of what the node did.

Bounded: each thread asks at most MAX_SAMPLES times and each question is bounded by `ask`'s own
timeout; stop() joins every thread within JOIN_S and raises what went wrong in one.
"""
from __future__ import annotations

import threading
import time
from typing import Callable, Mapping, Optional

from tests.chaos.history import RoleSample

PERIOD_S = 0.1
MAX_SAMPLES = 20_000  # per node: over half an hour at PERIOD_S, far past any run
JOIN_S = 15.0


def sample_of(node: str, partition: int, asked: float, answered: float,
              stats: Optional[dict]) -> Optional[RoleSample]:
    """The RoleSample in a node's stats answer, or None when it says no role."""
    if not isinstance(stats, dict) or stats.get("role") not in ("master", "slave"):
        return None
    return RoleSample(node, asked, answered, stats["role"], int(stats.get("epoch") or 0),
                      bool(stats.get("leased", False)), float(stats.get("lease_s") or 0.0),
                      partition, stats.get("clock"))


class RoleSampler:
    """`ask(node)` returns the node's stats, or None when it did not answer in time; `nodes`
    maps each node to its partition."""

    def __init__(self, ask: Callable[[str], Optional[dict]], nodes: Mapping[str, int],
                 period: float = PERIOD_S, max_samples: int = MAX_SAMPLES) -> None:
        self.ask = ask
        self.nodes = dict(nodes)
        self.period = period
        self.max_samples = max_samples
        self.unanswered: dict[str, int] = {node: 0 for node in self.nodes}
        self.errors: list[BaseException] = []
        self._samples: list[RoleSample] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._sample, args=(node,), daemon=True,
                                          name=f"chaos-roles-{node}") for node in self.nodes]

    def start(self) -> "RoleSampler":
        for thread in self._threads:
            thread.start()
        return self

    def stop(self) -> list[RoleSample]:
        """Stop and join every thread; returns the samples."""
        self._stop.set()
        deadline = time.monotonic() + JOIN_S
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        stuck = [thread.name for thread in self._threads if thread.is_alive()]
        if stuck:
            raise AssertionError(f"role sampler threads {stuck} did not stop within {JOIN_S:g} s")
        if self.errors:
            raise self.errors[0]
        return self.samples

    def __enter__(self) -> "RoleSampler":
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(JOIN_S)

    @property
    def samples(self) -> list[RoleSample]:
        """A copy, in the order asked."""
        with self._lock:
            return sorted(self._samples, key=lambda sample: sample.asked)

    def _sample(self, node: str) -> None:
        partition = self.nodes[node]
        try:
            for _ in range(self.max_samples):
                if self._stop.is_set():
                    return
                asked = time.monotonic()
                stats = self.ask(node)
                answered = time.monotonic()
                sample = sample_of(node, partition, asked, answered, stats)
                with self._lock:
                    if sample is None:
                        self.unanswered[node] += 1
                    else:
                        self._samples.append(sample)
                self._stop.wait(max(0.0, asked + self.period - time.monotonic()))
        except BaseException as exc:  # a bug of the test: stop() raises it
            self.errors.append(exc)
