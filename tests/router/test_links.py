"""Where the router sends a read: pure logic over what it last heard from each node."""
from yaddb.router.links import NodeLink, Partition


def _partition(*slaves: tuple[str, bool, str]) -> Partition:
    """A live master of history "h1" and slaves given as (address, ready, history)."""
    master = NodeLink(0, "m:1", "master", None)
    master.alive, master.stats = True, {"history": "h1"}
    partition = Partition(0, master)
    for address, ready, history in slaves:
        link = partition.slaves[address] = NodeLink(0, address, "slave", None)
        link.alive, link.stats = True, {"replication": {"ready": ready, "history": history}}
    return partition


def test_reads_take_turns_over_the_master_and_its_ready_slaves():
    partition = _partition(("s:1", True, "h1"), ("s:2", True, "h1"))
    assert sorted(partition.reader("any").address for _ in range(6)) == ["m:1"] * 2 + ["s:1"] * 2 + ["s:2"] * 2
    assert {partition.reader("master").address for _ in range(4)} == {"m:1"}


def test_a_slave_catching_up_or_following_another_master_gets_no_reads():
    partition = _partition(("s:1", False, "h1"), ("s:2", True, "h2"), ("s:3", True, None))
    assert {partition.reader("any").address for _ in range(6)} == {"m:1"}


def test_with_the_master_down_reads_go_to_its_slaves_and_with_nothing_up_to_the_master():
    partition = _partition(("s:1", True, "h1"))
    partition.master.alive = False
    assert {partition.reader(preference).address for preference in ("any", "master")} == {"s:1"}
    partition.slaves["s:1"].alive = False
    assert partition.reader("any") is partition.master  # its error then says it is down


def test_slaves_are_learned_once_from_the_masters_list():
    partition = _partition()
    made = []
    connect = lambda address: made.append(address) or NodeLink(0, address, "slave", None)
    listed = [{"address": "s:1"}, {"address": "m:1"}, {"nothing": 1}, "junk"]
    assert [link.address for link in partition.learn_slaves(listed, connect)] == ["s:1"]
    assert partition.learn_slaves(listed, connect) == [] and made == ["s:1"]
