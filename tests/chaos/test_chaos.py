"""Chaos: one partition (a master and two slaves, each on its own host, and a router on a
fourth) under process and network faults while clients write, delete and read; afterwards the
checker (checker.py) judges the whole history against what every node holds.

A run is a number of fault cycles: inflict a fault (nemesis.py), hold it for a random 0.5-3 s,
heal it, then wait until the cluster has settled (every node answers, the slaves have caught
up with what the master had, a new write was acknowledged). After the last cycle the clients
stop, the slaves must converge on their master, every process is stopped cleanly and each
node's content is read from its data dir.

    YADDB_CHAOS_CYCLES=200 python3 -m pytest -q tests/chaos   # a long run (default 20 cycles)
    YADDB_CHAOS_SEED=1234 ...                                  # replay a run's choices

The clients live in this test process, in the root namespace, and reach the hosts over the
bridge: their history then has one clock, and ZeroMQ, which opens its sockets from its own
I/O threads, needs no separate process per namespace. The root namespace is a host of its own
(OUTSIDE, the bridge's address), so a split can still put the clients on one side.
"""
from __future__ import annotations

import os
import random
import time

from tests.chaos.checker import check, report
from tests.chaos.cluster import HOSTS, MASTER, ROUTER, SLAVES, ChaosCluster
from tests.chaos.history import History
from tests.chaos.nemesis import Nemesis
from tests.chaos.workload import Workload

HOLD_S = (0.5, 3.0)   # how long a fault lasts: past a slave's 2 s silence limit at times
SETTLE_S = 30.0       # after a heal, the cluster must be whole again within this
CONVERGE_S = 60.0     # after the last cycle, the slaves must equal their master within this
DEFAULT_CYCLES = 40   # about 2 minutes on a 2-core machine


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name, "").strip()
    return int(value) if value else default


def test_one_partition_keeps_what_it_acknowledged_through_process_and_network_faults(
        make_network, processes, tmp_path):
    cycles = _env_int("YADDB_CHAOS_CYCLES", DEFAULT_CYCLES)
    seed = _env_int("YADDB_CHAOS_SEED", random.randrange(1 << 32))
    print(f"chaos: {cycles} cycles, YADDB_CHAOS_SEED={seed}")  # shown when the test fails
    rng = random.Random(seed)
    network = make_network(HOSTS)
    cluster = ChaosCluster(network, processes, tmp_path).start()
    history = History()
    nemesis = Nemesis(cluster, history, rng)
    workload = Workload(history, cluster.endpoint(ROUTER), seed).start()
    began = time.monotonic()
    settle_times = []
    try:
        for cycle, name in enumerate(nemesis.schedule(cycles), 1):
            history.note(f"cycle {cycle}/{cycles}: {name}")
            heal = nemesis.inflict(name)
            try:
                time.sleep(rng.uniform(*HOLD_S))  # the fault's duration: this is the nemesis
            finally:
                heal()
            healed_at = time.monotonic()
            cluster.wait_settled(history, healed_at, SETTLE_S)
            settle_times.append(time.monotonic() - healed_at)
    finally:
        network.heal()  # whatever went wrong, nothing stays cut or frozen for the teardown
        cluster.resume_all()
        workload.stop()
    faults_took = time.monotonic() - began
    cluster.wait_until(lambda: cluster.slaves_caught_up(0, exactly=True),
                       "the slaves to converge on their master once the clients stopped",
                       CONVERGE_S)
    finals = cluster.final_contents()

    counts = history.counts()
    print(f"chaos: {cycles} cycles in {faults_took:.1f} s, settled within "
          f"{max(settle_times, default=0):.2f} s of each heal; operations: {counts}")
    # The run means something only if every kind of operation succeeded often.
    for kind in ("write ok", "write ok w=majority", "delete ok", "delete ok w=majority", "read ok"):
        assert counts.get(kind, 0) >= 10 * cycles, f"too few {kind}: {counts}"
    violations = check(history.ops, finals, [(MASTER, SLAVES)])
    assert not violations, f"YADDB_CHAOS_SEED={seed}\n" + report(
        violations, history.started, history.events)
