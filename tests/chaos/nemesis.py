"""The faults the chaos test inflicts on one partition (cluster.py) while clients run.

Each fault is a function that breaks something now and returns how to heal it; hold() is how
long it lasts. "master" and "slave" mean the roles the router's /stats gives when the fault
begins (roles move with failover), not the nodes that started so.

    kill_slave            SIGKILL a slave; heal: start it again on its data dir
    kill_master           SIGKILL the master; heal: start it again on its data dir
    pause_node            SIGSTOP any node; heal: SIGCONT
    cut_slave_host        a slave's link down: it is cut from everyone, clients included
    cut_master_from_slaves  iptables in the namespaces: master and slaves lose each other both
                          ways, while the router and the clients still reach the master
    one_way_master_to_slave  the master's packets to one slave are dropped, not the reverse
    lossy_slave_link      random loss (20-50 %) on everything into and out of a slave
    isolate_slave         a minority split: one slave alone, the master, the other slave, the
                          router and the clients together

These last for HOLD_S: at times past the router's --failover-after, so with failover on they
may or may not end in one. The faults below need failover (the router's --failover-after; the
schedule has them only then) and last until the router has promoted a slave, then a little more:

    kill_master_for_good  SIGKILL the master; heal: start it again on its data dir, where it
                          must come back as a slave of the new master
    isolate_master        the master cut from the router and the slaves, both ways, while the
                          clients still reach it: its lease must stop its writes
    pause_master_past_failover  SIGSTOP the master; heal: SIGCONT, a master that missed its
                          own replacement
"""
from __future__ import annotations

import random
import time
from typing import Callable, Optional

from tests.chaos.cluster import NODES, ROUTER, ChaosCluster, ClusterError, Roles
from tests.chaos.history import History
from tests.chaos.netns import OUTSIDE

Heal = Callable[[], None]
HOLD_S = (0.5, 3.0)          # how long a fault lasts: past a slave's 2 s silence limit at times
FAILOVER_WAIT_S = 20.0       # past --failover-after, the router must have promoted within this
AFTER_FAILOVER_S = (0.2, 1.0)  # how much longer a failover fault lasts once it worked
FAILOVER_FAULTS = ("kill_master_for_good", "isolate_master", "pause_master_past_failover")


class Nemesis:
    def __init__(self, cluster: ChaosCluster, history: History, rng: random.Random) -> None:
        self.cluster = cluster
        self.network = cluster.network
        self.history = history
        self.rng = rng
        self.faults: dict[str, Callable[[], Heal]] = {
            "kill_slave": self.kill_slave, "kill_master": self.kill_master,
            "pause_node": self.pause_node, "cut_slave_host": self.cut_slave_host,
            "cut_master_from_slaves": self.cut_master_from_slaves,
            "one_way_master_to_slave": self.one_way_master_to_slave,
            "lossy_slave_link": self.lossy_slave_link, "isolate_slave": self.isolate_slave}
        if cluster.failover_after is not None:
            self.faults.update({
                "kill_master_for_good": self.kill_master_for_good,
                "isolate_master": self.isolate_master,
                "pause_master_past_failover": self.pause_master_past_failover})
        self.failovers: list[tuple[str, str, str, float]] = []  # fault, from, to, seconds
        self._replaced: Optional[str] = None
        self._inflicted_at = 0.0

    def schedule(self, cycles: int) -> list[str]:
        """`cycles` fault names: rounds of every fault, each round in a random order, so
        every fault runs once per len(faults) cycles."""
        names: list[str] = []
        while len(names) < cycles:
            round_ = list(self.faults)
            self.rng.shuffle(round_)
            names += round_
        return names[:cycles]

    def inflict(self, name: str) -> Heal:
        self._replaced = None
        self._inflicted_at = time.monotonic()
        return self.faults[name]()

    def hold(self, name: str) -> None:
        """The fault's duration: a random HOLD_S, or for a failover fault until the router
        has put another master in place of the one the fault hit (ClusterError when that
        does not happen within --failover-after + FAILOVER_WAIT_S), then AFTER_FAILOVER_S."""
        if self._replaced is None:
            time.sleep(self.rng.uniform(*HOLD_S))  # the nemesis: the fault lasts this long
            return
        old, cluster = self._replaced, self.cluster
        cluster.wait_until(lambda: (cluster.roles() or (old,))[0] != old,
                           f"the router to promote a slave in place of {old} ({name})",
                           cluster.failover_after + FAILOVER_WAIT_S)
        took = time.monotonic() - self._inflicted_at
        partition = cluster.partition() or {}
        new = cluster.node_at(partition.get("master"))
        self._note(f"router failed over {old} -> {new}, {took:.1f} s after the fault: "
                   f"{partition.get('last_failover')}")
        self.failovers.append((name, old, str(new), took))
        time.sleep(self.rng.uniform(*AFTER_FAILOVER_S))  # the nemesis: a little longer still

    def _note(self, what: str) -> None:
        self.history.note(what)

    def _roles(self) -> Roles:
        roles = self.cluster.roles()
        if roles is None:
            raise ClusterError(f"the router does not say which node is master\n"
                               f"{self.cluster.logs()}")
        return roles

    # -- process faults ------------------------------------------------------------------------

    def kill_slave(self) -> Heal:
        return self._kill(self.rng.choice(self._roles()[1]))

    def kill_master(self) -> Heal:
        return self._kill(self._roles()[0])

    def kill_master_for_good(self) -> Heal:
        self._replaced = master = self._roles()[0]
        return self._kill(master, "for good")

    def _kill(self, node: str, how: str = "") -> Heal:
        self._note(f"SIGKILL {node}{' ' + how if how else ''}")
        self.cluster.kill(node)

        def heal() -> None:
            self._note(f"restart {node}")
            self.cluster.launch(node)
        return heal

    def pause_node(self) -> Heal:
        return self._pause(self.rng.choice(NODES))

    def pause_master_past_failover(self) -> Heal:
        self._replaced = master = self._roles()[0]
        return self._pause(master)

    def _pause(self, node: str) -> Heal:
        self._note(f"SIGSTOP {node}")
        self.cluster.pause(node)

        def heal() -> None:
            self._note(f"SIGCONT {node}")
            self.cluster.resume(node)
        return heal

    # -- network faults ------------------------------------------------------------------------

    def _heal_network(self) -> None:
        self._note("network healed")
        self.network.heal()

    def cut_slave_host(self) -> Heal:
        slave = self.rng.choice(self._roles()[1])
        self._note(f"{slave}'s link down")
        self.network.cut_off(slave)
        return self._heal_network

    def cut_master_from_slaves(self) -> Heal:
        master, slaves = self._roles()
        self._note(f"master {master} and slaves {', '.join(slaves)} cut from each other "
                   f"(router and clients reach the master)")
        self.network.split([master], slaves)
        return self._heal_network

    def one_way_master_to_slave(self) -> Heal:
        master, slaves = self._roles()
        slave = self.rng.choice(slaves)
        self._note(f"packets from master {master} to {slave} dropped (one way)")
        self.network.drop(master, slave, one_way=True)
        return self._heal_network

    def lossy_slave_link(self) -> Heal:
        slave = self.rng.choice(self._roles()[1])
        probability = self.rng.uniform(0.2, 0.5)
        self._note(f"{slave} loses {probability:.0%} of its packets")
        self.network.lose_packets(slave, probability)
        return self._heal_network

    def isolate_slave(self) -> Heal:
        master, slaves = self._roles()
        slave = self.rng.choice(slaves)
        others = [master, ROUTER, OUTSIDE] + [s for s in slaves if s != slave]
        self._note(f"split: {slave} alone | {', '.join(others)}")
        self.network.split([slave], others)
        return self._heal_network

    def isolate_master(self) -> Heal:
        master, slaves = self._roles()
        self._replaced = master
        others = [ROUTER, *slaves]
        self._note(f"split: master {master} | {', '.join(others)} (the clients reach both)")
        self.network.split([master], others)
        return self._heal_network
