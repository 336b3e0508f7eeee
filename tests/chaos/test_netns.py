"""The chaos suite's test network (netns.py) does what each fault says, and leaves nothing behind."""
from __future__ import annotations

import os
import sys

from tests.chaos.netns import OUTSIDE, TestNetwork, run
from tests.helpers import wait_for


def _links() -> str:
    return run("ip", "-o", "link").stdout


def _namespaces() -> list[str]:
    return run("ip", "netns", "list").stdout.split()


def test_hosts_reach_each_other_and_this_process_until_a_host_is_cut_off(make_network):
    net = make_network(["a", "b"])
    assert net.connects("a", "b") and net.connects(OUTSIDE, "a") and net.connects("b", OUTSIDE)
    net.cut_off("b")
    assert not net.connects("a", "b") and not net.connects("b", "a")
    assert not net.connects(OUTSIDE, "b") and net.connects(OUTSIDE, "a")
    net.heal()
    assert net.connects("a", "b") and net.connects(OUTSIDE, "b")


def test_drop_puts_its_rules_in_the_namespaces_one_way_or_both(make_network):
    net = make_network(["a", "b"])
    net.drop("a", "b", one_way=True)
    assert f"-A OUTPUT -d {net.address('b')}/32 -j DROP" in net.rules("a")
    assert "DROP" not in net.rules("b")
    assert not net.connects("a", "b")  # TCP needs both ways: a one-way cut stops it
    net.heal()
    net.drop(OUTSIDE, "a")  # the root namespace gets no rule: both go in a's
    assert f"-A INPUT -s {net.address(OUTSIDE)}/32 -j DROP" in net.rules("a")
    assert f"-A OUTPUT -d {net.address(OUTSIDE)}/32 -j DROP" in net.rules("a")
    assert not net.connects(OUTSIDE, "a") and net.connects("b", "a")
    net.heal()
    assert "DROP" not in net.rules("a") and net.connects(OUTSIDE, "a")


def test_a_split_cuts_across_groups_only(make_network):
    net = make_network(["a", "b", "c", "d"])
    net.split(["a"], ["b", "c", OUTSIDE])
    assert not net.connects("a", "b") and not net.connects("c", "a")
    assert not net.connects(OUTSIDE, "a")
    assert net.connects("b", "c") and net.connects(OUTSIDE, "b")
    assert net.connects("a", "d") and net.connects("d", "c")  # d is in no group


def test_packet_loss_is_a_random_drop_on_the_hosts_link(make_network):
    net = make_network(["a", "b"])
    net.lose_packets("b", 0.25)
    rules = net.rules("b")
    for chain, way in (("INPUT", "-i"), ("OUTPUT", "-o")):
        assert (f"-A {chain} {way} eth0 -m statistic --mode random --probability 0.25"
                in rules)
    net.heal()
    assert "statistic" not in net.rules("b")


def test_a_process_started_in_a_host_lives_in_its_namespace_tied_to_this_one(make_network,
                                                                              processes, tmp_path):
    net = make_network(["a"])
    log = tmp_path / "a.log"
    script = ("import os, socket\n"
              f"socket.socket().bind(({net.address('a')!r}, 0))\n"  # only a's namespace has it
              "os.fstat(int(os.environ['YADDB_PARENT_FD']))\n"
              "print('bound, tied', flush=True)\n"
              "os.read(int(os.environ['YADDB_PARENT_FD']), 1)\n")
    child = processes.add(net.spawn("a", "probe", [sys.executable, "-c", script],
                                    log_path=str(log)))
    wait_for(lambda: "bound, tied" in log.read_text() or child.returncode is not None,
             "the process to bind a's address")
    assert "bound, tied" in log.read_text(), log.read_text()
    child.stop(10)


def test_closing_removes_namespaces_bridge_and_veths_and_leftovers_of_dead_runs(chaos_iptables):
    dead = 4_194_000  # above any pid this machine hands out by default: no such process
    while True:
        try:
            os.kill(dead, 0)
            dead -= 1
        except ProcessLookupError:
            break
    leftover = f"yc{dead:x}-0-stale"
    run("ip", "netns", "add", leftover)
    with TestNetwork(["a", "b"], iptables=chaos_iptables) as net:
        assert leftover not in _namespaces()
        assert net.bridge in _links() and net.namespace("a") in _namespaces()
    # A namespace's devices go a moment after its name.
    wait_for(lambda: net.prefix not in _links(), "the test network's devices to go", 10)
    assert not [name for name in _namespaces() if name.startswith(net.prefix)]
