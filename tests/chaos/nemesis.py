"""The faults the chaos test inflicts on one partition (cluster.py) while clients run.

Each fault is a function that breaks something now and returns how to heal it. They are the
faults that mean something before automatic failover exists: the master may be lost for a
while (writes then fail or time out, reads go to slaves) but always comes back on its data.

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
"""
from __future__ import annotations

import random
from typing import Callable

from tests.chaos.cluster import MASTER, NODES, ROUTER, SLAVES, ChaosCluster
from tests.chaos.history import History
from tests.chaos.netns import OUTSIDE

Heal = Callable[[], None]


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
        return self.faults[name]()

    def _note(self, what: str) -> None:
        self.history.note(what)

    # -- process faults ------------------------------------------------------------------------

    def kill_slave(self) -> Heal:
        return self._kill(self.rng.choice(SLAVES))

    def kill_master(self) -> Heal:
        return self._kill(MASTER)

    def _kill(self, node: str) -> Heal:
        self._note(f"SIGKILL {node}")
        self.cluster.kill(node)

        def heal() -> None:
            self._note(f"restart {node}")
            self.cluster.launch(node)
        return heal

    def pause_node(self) -> Heal:
        node = self.rng.choice(NODES)
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
        slave = self.rng.choice(SLAVES)
        self._note(f"{slave}'s link down")
        self.network.cut_off(slave)
        return self._heal_network

    def cut_master_from_slaves(self) -> Heal:
        self._note("master and slaves cut from each other (router and clients reach the master)")
        self.network.split([MASTER], SLAVES)
        return self._heal_network

    def one_way_master_to_slave(self) -> Heal:
        slave = self.rng.choice(SLAVES)
        self._note(f"packets from master to {slave} dropped (one way)")
        self.network.drop(MASTER, slave, one_way=True)
        return self._heal_network

    def lossy_slave_link(self) -> Heal:
        slave = self.rng.choice(SLAVES)
        probability = self.rng.uniform(0.2, 0.5)
        self._note(f"{slave} loses {probability:.0%} of its packets")
        self.network.lose_packets(slave, probability)
        return self._heal_network

    def isolate_slave(self) -> Heal:
        slave = self.rng.choice(SLAVES)
        others = [MASTER, ROUTER, OUTSIDE] + [s for s in SLAVES if s != slave]
        self._note(f"split: {slave} alone | {', '.join(others)}")
        self.network.split([slave], others)
        return self._heal_network
