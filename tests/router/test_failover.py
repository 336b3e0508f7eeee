"""Automatic failover with real processes (CONTRACT.md section 7, docs/failover.md): a router
with --failover-after promotes a slave when its master goes silent, fences the old master by
its lease, brings the old master back as a slave, and keeps its configuration across a restart."""
import json
import signal
import threading
import time

import pytest

from yaddb import Client
from yaddb.errors import NotApplied, YaddbError
from tests.helpers import wait_for
from tests.router.test_run_router import http

FAILOVER_AFTER = "2.5"
KEYS = [b"key%03d" % i for i in range(100)]


def start_partition(tmp_path, processes, slaves: int = 1):
    """A master, `slaves` slaves and a router failing over after FAILOVER_AFTER s; every key
    written with w=all, so every slave holds it."""
    master = processes.node(tmp_path / "master").wait_ready()
    followers = [processes.node(tmp_path / f"slave{j}", role=(
        "slave", "--master-host", "127.0.0.1", "--master-port", str(master.port))).wait_ready()
        for j in range(slaves)]
    router = processes.router(tmp_path / "router", "--nodes", master.address,
                              "--failover-after", FAILOVER_AFTER, "--node-timeout", "0.5")
    router.wait_ready()
    with Client(router.endpoint, timeout=10) as client:
        wait_for(lambda: len(partition(client)["slaves"]) == slaves
                 and all(s["ready"] for s in partition(client)["slaves"]),
                 "the router to see every slave ready", 30)
        for key in KEYS:
            client.set(key, key + b"-value", w="all")
    return master, followers, router


def partition(client: Client) -> dict:
    return client.stats()["partitions"][0]


def write_until_it_works(client: Client, key: bytes, timeout: float = 20.0) -> float:
    """Seconds until a write of `key` is acknowledged; each failed try was refused or failed."""
    start = time.monotonic()
    while True:
        try:
            client.set(key, b"after")
            return time.monotonic() - start
        except YaddbError:
            if time.monotonic() - start > timeout:
                raise
            time.sleep(0.05)


@pytest.mark.parametrize("fault", [signal.SIGKILL, signal.SIGSTOP])
def test_a_silent_master_is_replaced_and_comes_back_as_a_slave(tmp_path, processes, fault):
    master, (slave,), router = start_partition(tmp_path, processes)
    with Client(router.endpoint, timeout=5) as client:
        master.child.signal(fault)
        took = write_until_it_works(client, b"after-failover")
        assert took < 10, took
        now = partition(client)
        assert now["master"] == slave.address and now["epoch"] == 1
        assert now["last_failover"]["from"] == master.address
        assert now["last_failover"]["to"] == slave.address
        assert "silent" in now["last_failover"]["why"]
        assert [client.get(key).value for key in KEYS] == [key + b"-value" for key in KEYS]
        # The HTTP edge's workers follow too, and its /stats tells the failover.
        body = json.dumps({"content_type": "text/plain", "encoding": "utf-8", "value": "web"})
        status, stored = http(router, "PUT", "/set?w=1", body.encode(), "application/json")
        assert status == 200, stored
        (hex_key,) = stored
        assert client.get(bytes.fromhex(hex_key)).value == b"web"
        status, stats = http(router, "GET", "/stats")
        assert stats["partitions"][0]["last_failover"]["to"] == slave.address

        # The old master returns (restarted on its data, or thawed): it becomes a slave of
        # the new master, fenced meanwhile, and then holds every write.
        if fault == signal.SIGKILL:
            master.child.wait(10)
            master = processes.node(master.data_dir, port=master.port).wait_ready()
        else:
            master.child.signal(signal.SIGCONT)

        def rejoined():
            slaves = partition(client)["slaves"]
            return any(s["address"] == master.address and s["ready"]
                       and s["master"] == slave.address for s in slaves)
        wait_for(rejoined, "the old master to rejoin as a slave of the new one", 30)
        client.set(b"w-all", b"both", w="all")  # both members hold it, so both answer
    with Client(master.endpoint, timeout=5, direct=False) as old:
        assert old.stats()["role"] == "slave"
        assert old.get(b"w-all").value == b"both"
        assert old.get(b"after-failover").value == b"after"
        with pytest.raises(YaddbError, match="not a master"):
            old.set(b"x", b"y")


def test_direct_clients_follow_the_new_master_without_a_restart(tmp_path, processes):
    """A client routing by itself keeps working through the failover, then asks the router
    for the new map and sends one-key calls straight to the new master again."""
    master, (slave,), router = start_partition(tmp_path, processes)
    with Client(router.endpoint, timeout=5) as client, \
            Client(slave.endpoint, timeout=5, direct=False) as new_master:
        assert client.get(KEYS[0]).value == KEYS[0] + b"-value"  # fetches the map
        master.child.signal(signal.SIGKILL)
        write_until_it_works(client, b"direct")

        def gets_go_straight_to_the_new_master():
            through_router = client.stats()["requests"].get("get", 0)
            on_master = new_master.stats()["ops"].get("get", 0)
            for _ in range(20):
                assert client.get(b"direct").value == b"after"
            return client.stats()["requests"].get("get", 0) == through_router \
                and new_master.stats()["ops"].get("get", 0) == on_master + 20
        wait_for(gets_go_straight_to_the_new_master, "direct routing to the new master", 30)


def test_a_master_cut_off_from_its_router_stops_taking_writes(tmp_path, processes):
    """The fence: with the router frozen, a client that still reaches the master directly
    has its writes refused once the lease runs out, before any slave could be promoted."""
    master, _, router = start_partition(tmp_path, processes)
    with Client(master.endpoint, timeout=5, direct=False) as direct:
        direct.set(b"leased", b"yes")
        router.child.signal(signal.SIGSTOP)
        frozen_at = time.monotonic()
        try:
            def refused():
                try:
                    direct.set(b"fenced", b"no")
                    return False
                except NotApplied as exc:
                    return "lease" in str(exc)
            wait_for(refused, "the master to refuse writes", 10)
            assert time.monotonic() - frozen_at < float(FAILOVER_AFTER)
            assert direct.get(b"leased").value == b"yes"  # reads go on
        finally:
            router.child.signal(signal.SIGCONT)
        wait_for(lambda: _writes(direct), "writes to come back with the router", 15)
        assert direct.get(b"fenced") is None or direct.get(b"fenced").value == b"no"


def _writes(client: Client) -> bool:
    try:
        client.set(b"again", b"ok")
        return True
    except NotApplied:
        return False


def test_no_promotion_without_enough_slaves_to_be_sure(tmp_path, processes):
    """Two slaves: both must answer (k=2 needs 2), or a w=majority write held by the silent
    one alone could be lost; the partition stays read-only and /stats says why."""
    master, (first, second), router = start_partition(tmp_path, processes, slaves=2)
    with Client(router.endpoint, timeout=5, read_retries=2) as client:
        second.child.signal(signal.SIGKILL)
        master.child.signal(signal.SIGKILL)
        wait_for(lambda: partition(client).get("failover_waiting"), "the router to say why", 20)
        state = partition(client)
        assert state["epoch"] == 0 and state["master"] == master.address
        assert "1 of its 2 slaves" in state["failover_waiting"]
        assert second.address in state["failover_waiting"]
        with pytest.raises(YaddbError):
            client.set(b"nowhere", b"x")
        assert client.get(KEYS[7]).value == KEYS[7] + b"-value"  # reads go on, from the slave


def test_the_configuration_outlives_the_router(tmp_path, processes):
    master, (slave,), router = start_partition(tmp_path, processes)
    with Client(router.endpoint, timeout=5) as client:
        master.child.signal(signal.SIGKILL)
        write_until_it_works(client, b"after")
    router.stop()
    stored = json.loads((tmp_path / "router" / "configuration.json").read_text())
    assert stored["partitions"][0]["master"] == slave.address
    assert stored["partitions"][0]["epoch"] == 1
    assert stored["partitions"][0]["members"] == [master.address]  # the replaced master
    again = processes.router(tmp_path / "router", "--nodes", master.address,  # stale on purpose
                             "--failover-after", FAILOVER_AFTER).wait_ready()
    with Client(again.endpoint, timeout=5) as client:
        assert partition(client)["master"] == slave.address
        write_until_it_works(client, b"with-the-new-router", timeout=10)
        assert client.get(b"after").value == b"after"
        # The old master returns after the router's restart: the router still knows it.
        master.child.wait(10)
        master = processes.node(master.data_dir, port=master.port).wait_ready()
        wait_for(lambda: any(s["address"] == master.address and s["ready"]
                             and s["master"] == slave.address
                             for s in partition(client)["slaves"]),
                 "the old master to rejoin under the restarted router", 30)
    assert "wins over --nodes" in again.log()


def test_a_returning_master_keeps_its_lost_writes_aside_and_goes_on_from_the_log(tmp_path, processes):
    """The old master took w=1 writes its slave never got; the slave is promoted. When the old
    master returns it writes those to its rollback file (exact: from its log), takes the new
    master's items for their keys, and goes on from the new master's log: no snapshot."""
    master, (slave,), router = start_partition(tmp_path, processes)
    slave.child.signal(signal.SIGKILL)  # it gets none of what follows
    slave.child.wait(10)
    lost = {b"lost-%d" % i: b"only on the old master %d" % i for i in range(5)}
    with Client(master.endpoint, timeout=5, direct=False) as old:
        for key, value in lost.items():
            old.set(key, value)
        old.set(KEYS[3], b"overwritten on the old master")
        old.delete(KEYS[4])
    master.child.signal(signal.SIGSTOP)
    slave = processes.node(slave.data_dir, port=slave.port, role=(
        "slave", "--master-host", "127.0.0.1", "--master-port", str(master.port))).wait_ready()
    with Client(router.endpoint, timeout=5) as client:
        write_until_it_works(client, b"on-the-new-master")
        assert partition(client)["master"] == slave.address
        client.set(KEYS[5], b"changed on the new master")
        master.child.signal(signal.SIGCONT)

        def rejoined():
            slaves = partition(client)["slaves"]
            return any(s["address"] == master.address and s["ready"] and s["lag"] == 0
                       and s["master"] == slave.address for s in slaves)
        wait_for(rejoined, "the old master to rejoin", 30)
        client.set(b"after-rejoin", b"both", w="all")
        [old_master] = [s for s in partition(client)["slaves"] if s["address"] == master.address]
        assert old_master["rolled_back"] == {"files": 1, "entries": len(lost) + 2}  # in /stats
    with Client(master.endpoint, timeout=5, direct=False) as old, \
            Client(slave.endpoint, timeout=5, direct=False) as new:
        replication = old.stats()["replication"]
        assert replication["full_syncs"] == 0, replication
        assert replication["rolled_back"]["entries"] == len(lost) + 2
        every = [*KEYS, *lost, b"on-the-new-master", b"after-rejoin"]
        ours = [old.get(key) for key in every]
        assert ours == [new.get(key) for key in every]
        assert all(old.get(key) is None for key in lost)
        assert old.get(KEYS[3]).value == KEYS[3] + b"-value"
        assert old.get(KEYS[4]).value == KEYS[4] + b"-value"
        assert old.get(KEYS[5]).value == b"changed on the new master"
    [path] = (master.data_dir / "rollback").glob("*.jsonl")
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert {bytes.fromhex(line["key"]) for line in lines} == {*lost, KEYS[3], KEYS[4]}
    assert all(line["exact"] for line in lines)
    deleted = [line for line in lines if line["deleted"]]
    assert [bytes.fromhex(line["key"]) for line in deleted] == [KEYS[4]]
    by_key = {bytes.fromhex(line["key"]): line for line in lines}
    assert by_key[b"lost-2"]["value"] == "only on the old master 2"


def test_the_other_slaves_go_on_from_the_new_masters_log(tmp_path, processes):
    """Slaves number the writes they apply as their master did, so the promoted slave's log
    continues its old master's: the other slave follows it with no snapshot, and w=majority
    right after the failover counts every member of the partition."""
    master, slaves, router = start_partition(tmp_path, processes, slaves=2)
    with Client(router.endpoint, timeout=5) as client:
        master.child.signal(signal.SIGKILL)
        write_until_it_works(client, b"after")
        promoted = partition(client)["master"]
        [other] = [s for s in slaves if s.address != promoted]
        with Client(other.endpoint, timeout=5, direct=False) as follower:
            full_syncs = follower.stats()["replication"]["full_syncs"]
            wait_for(lambda: follower.stats()["replication"]["master"] == promoted
                     and follower.stats()["replication"]["ready"]
                     and follower.get(b"after") is not None,
                     "the other slave to follow the new master", 30)
            client.set(b"majority", b"m", w="majority")  # 2 of 3: the new master and it
            assert follower.get(b"majority").value == b"m"
            assert follower.stats()["replication"]["full_syncs"] == full_syncs
            assert [follower.get(key).value for key in KEYS] == [key + b"-value" for key in KEYS]


def test_a_master_whose_lease_ran_out_never_acknowledges_a_held_write(tmp_path, processes):
    """A w=majority write held for its slave when the master's lease runs out is not
    acknowledged even if the slave confirms it later: the router may already have asked the
    slaves where they are, and a failover would roll the write back."""
    master = processes.node(tmp_path / "master", "--replication-timeout", "20").wait_ready()
    slave = processes.node(tmp_path / "slave", role=(
        "slave", "--master-host", "127.0.0.1", "--master-port", str(master.port))).wait_ready()
    router = processes.router(tmp_path / "router", "--nodes", master.address,
                              "--failover-after", FAILOVER_AFTER).wait_ready()
    with Client(master.endpoint, timeout=5, direct=False) as direct:
        wait_for(lambda: direct.stats()["slaves"] and direct.stats()["slaves"][0]["ready"],
                 "the slave to be ready", 30)
        direct.set(b"before", b"ok", w="majority")
        slave.child.signal(signal.SIGSTOP)
        router.child.signal(signal.SIGSTOP)  # no more leases
        outcome = []

        def write():
            with Client(master.endpoint, timeout=30, direct=False) as writer:
                writer.replication_timeout = 20.0
                try:
                    outcome.append(writer.set(b"held", b"v", w="majority"))
                except YaddbError as exc:
                    outcome.append(exc)
        thread = threading.Thread(target=write)
        thread.start()
        try:
            wait_for(lambda: direct.stats()["lease_s"] == 0, "the lease to run out", 10)
            slave.child.signal(signal.SIGCONT)  # it applies and confirms the write now
            thread.join(40)
        finally:
            slave.child.signal(signal.SIGCONT)
            router.child.signal(signal.SIGCONT)
        [answer] = outcome
        assert isinstance(answer, YaddbError) and "stopped being master" in str(answer), answer
