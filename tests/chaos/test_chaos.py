"""Chaos: one partition (three nodes, each on its own host, and a router on a fourth) under
process and network faults while clients write, delete and read; afterwards the checker
(checker.py) judges the whole history against what every node holds.

A run is a number of fault cycles: inflict a fault (nemesis.py), hold it (a random 0.5-3 s, or
for a failover fault until the router has promoted a slave), heal it, then wait until the
cluster has settled (one master, the router's, every other node its slave and caught up with
what that master had, a new write acknowledged). After the last cycle the clients stop, the
slaves must converge on their master, every process is stopped cleanly and each node's content
is read from its data dir, with every node's rollback files.

All along, a sampler (sampler.py) asks every node what it is (master or slave, its epoch and
lease), for the rule that a partition never has two masters taking writes at once.

With a router that has --failover-after (cluster.failover_supported()) it runs with a short
one, and the faults that need failover are in the schedule; without, they are left out, and
test_the_failover_faults_run says why.

    YADDB_CHAOS_CYCLES=200 python3 -m pytest -q tests/chaos   # a long run
    YADDB_CHAOS_SEED=1234 ...                                  # replay a run's choices
    YADDB_CHAOS_DUMP=/tmp/run.json ...                         # keep the run's whole record
    YADDB_CHAOS_FAULTS=kill_master,isolate_master ...          # these faults, in this order
    YADDB_CHAOS_FAILOVER_AFTER=0 ...                           # the router's; 0: no failover

The clients live in this test process, in the root namespace, and reach the hosts over the
bridge: their history then has one clock, and ZeroMQ, which opens its sockets from its own
I/O threads, needs no separate process per namespace. The root namespace is a host of its own
(OUTSIDE, the bridge's address), so a split can still put the clients on one side.
"""
from __future__ import annotations

import json
import os
import random
import time

import pytest

from tests.chaos.checker import check, report
from tests.chaos.cluster import HOSTS, NODES, ROUTER, ChaosCluster, failover_supported
from tests.chaos.history import History
from tests.chaos.nemesis import FAILOVER_FAULTS, Nemesis
from tests.chaos.rollback import read_rollbacks
from tests.chaos.sampler import RoleSampler
from tests.chaos.workload import Workload

SETTLE_S = 30.0       # after a heal, the cluster must be whole again within this
CONVERGE_S = 60.0     # after the last cycle, the slaves must equal their master within this
SAMPLE_TIMEOUT_S = 0.5
DEFAULT_ROUNDS = 3    # each fault this many times: about 2 minutes on a 2-core machine


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name, "").strip()
    return int(value) if value else default


def _timeline(history: History) -> str:
    """The nemesis's events, in seconds since the history began and in wall-clock time (the
    processes' logs use it)."""
    offset = time.time() - time.monotonic()
    return "\n".join(f"{e.at - history.started:8.3f} "
                     f"{time.strftime('%H:%M:%S', time.localtime(e.at + offset))}"
                     f".{int((e.at + offset) % 1 * 1000):03d} {e.what}" for e in history.events)


def _dump(path: str, history: History, samples, rolled_back, finals) -> None:
    """YADDB_CHAOS_DUMP=file.json: the run's operations, events, role samples, rolled-back
    items and final contents, for a person to dig into (times in s since the history began)."""
    t0 = history.started

    def text(data):
        return None if data is None else data.decode("utf-8", "backslashreplace")
    doc = {"ops": [{**op.__dict__, "key": text(op.key), "value": text(op.value),
                    "start": op.start - t0, "end": op.end - t0} for op in history.ops],
           "events": [{"at": e.at - t0, "what": e.what} for e in history.events],
           "samples": [{**s.__dict__, "asked": s.asked - t0, "answered": s.answered - t0}
                       for s in samples],
           "rolled_back": [{**e.__dict__, "key": text(e.key), "value": text(e.value)}
                           for e in rolled_back],
           "finals": {node: {text(k): text(v) for k, v in content.items()}
                      for node, content in finals.items()}}
    with open(path, "w") as file:
        json.dump(doc, file, indent=0)


def test_the_failover_faults_run():
    """The faults that need failover are in the chaos run's schedule exactly when the router
    can fail over (the chaos run itself checks each ended in a failover)."""
    if not failover_supported():
        pytest.skip("run_router.py has no --failover-after yet: the chaos run leaves out "
                    f"{', '.join(FAILOVER_FAULTS)}")

    class FailoverCluster:  # just what Nemesis looks at to choose its faults
        failover_after = 2.5
        network = None
    names = Nemesis(FailoverCluster(), History(), random.Random(1)).schedule(11)
    assert sorted(set(FAILOVER_FAULTS) & set(names)) == sorted(FAILOVER_FAULTS)


def test_one_partition_keeps_what_it_acknowledged_through_process_and_network_faults(
        make_network, processes, tmp_path):
    network = make_network(HOSTS)
    cluster = ChaosCluster(network, processes, tmp_path)
    history = History()
    seed = _env_int("YADDB_CHAOS_SEED", random.randrange(1 << 32))
    rng = random.Random(seed)
    nemesis = Nemesis(cluster, history, rng)
    faults = [name for name in os.environ.get("YADDB_CHAOS_FAULTS", "").split(",") if name]
    unknown = sorted(set(faults) - set(nemesis.faults))
    assert not unknown, f"YADDB_CHAOS_FAULTS names faults this run does not have: {unknown}"
    cycles = _env_int("YADDB_CHAOS_CYCLES", DEFAULT_ROUNDS * len(faults or nemesis.faults))
    failover = f"failover after {cluster.failover_after:g} s" if cluster.failover_after else \
        f"no failover, so no {', '.join(FAILOVER_FAULTS)}"
    print(f"chaos: {cycles} cycles, YADDB_CHAOS_SEED={seed}, {failover}")  # shown on failure
    cluster.start()
    sampler = RoleSampler(lambda node: cluster.stats(node, SAMPLE_TIMEOUT_S),
                          {node: 0 for node in NODES}).start()

    def master_endpoint():
        roles = cluster.roles()
        return roles and cluster.endpoint(roles[0])
    workload = Workload(history, cluster.endpoint(ROUTER), seed, pinned=master_endpoint).start()
    began = time.monotonic()
    settle_times = []
    try:
        schedule = (faults * cycles)[:cycles] if faults else nemesis.schedule(cycles)
        for cycle, name in enumerate(schedule, 1):
            history.note(f"cycle {cycle}/{cycles}: {name}")
            heal = nemesis.inflict(name)
            try:
                nemesis.hold(name)
            finally:
                heal()
            healed_at = time.monotonic()
            cluster.wait_settled(history, healed_at, SETTLE_S)
            settle_times.append(time.monotonic() - healed_at)
    finally:
        print(_timeline(history))  # shown when the test fails: what the nemesis did, when
        network.heal()  # whatever went wrong, nothing stays cut or frozen for the teardown
        cluster.resume_all()
        try:
            workload.stop()
        finally:
            samples = sampler.stop()
    faults_took = time.monotonic() - began
    cluster.wait_until(lambda: cluster.slaves_caught_up(0, exactly=True),
                       "the slaves to converge on their master once the clients stopped",
                       CONVERGE_S)
    finals, (master, slaves) = cluster.final_contents()
    rolled_back = read_rollbacks({node: cluster.data_dir(node) for node in NODES})

    counts = history.counts()
    print(f"chaos: {cycles} cycles in {faults_took:.1f} s, settled within "
          f"{max(settle_times, default=0):.2f} s of each heal; failovers: "
          f"{[(name, old, new, round(took, 1)) for name, old, new, took in nemesis.failovers]}; "
          f"master at the end {master}; {len(rolled_back)} rolled-back items "
          f"({sum(not e.exact for e in rolled_back)} not exact); {len(samples)} role samples "
          f"(unanswered: {sampler.unanswered}); operations: {counts}")
    if os.environ.get("YADDB_CHAOS_DUMP"):
        _dump(os.environ["YADDB_CHAOS_DUMP"], history, samples, rolled_back, finals)
    violations = check(history.ops, finals, [(master, slaves)], rolled_back=rolled_back,
                       role_samples=samples)
    assert not violations, f"YADDB_CHAOS_SEED={seed}\n" + report(
        violations, history.started, history.events)
    # The run means something only if every kind of operation succeeded often (a partition
    # is read-only for about --failover-after at each failover: 5 a cycle at least).
    for kind in ("write ok", "write ok w=majority", "delete ok", "delete ok w=majority", "read ok"):
        assert counts.get(kind, 0) >= 5 * cycles, f"too few {kind}: {counts}"
    assert len(samples) >= 5 * faults_took, f"too few role samples: {len(samples)}"
