"""Fixtures of the chaos suite: whether this machine can build test networks (probed once per
session; tests that need one are skipped with the reason when it cannot), and `make_network`.

What a test network needs: root (namespaces, veths, a bridge), `ip netns add`, an iptables
that works inside a namespace (.ci/run installs iptables where it is missing), and packets
crossing the bridge (a host firewall on bridged traffic would stop them).
"""
from __future__ import annotations

import os
import shutil

import pytest

from tests.chaos.netns import OUTSIDE, NetworkError, TestNetwork, find_iptables


def _probe() -> str:
    """The iptables command to use; pytest.skip with the reason when networks cannot be built."""
    if os.geteuid() != 0:
        pytest.skip("the chaos suite builds network namespaces: it needs root")
    if shutil.which("ip") is None:
        pytest.skip("the chaos suite needs iproute2's `ip` command")
    try:
        iptables = find_iptables()
    except (NetworkError, OSError) as exc:
        pytest.skip(f"the chaos suite needs namespaces and iptables inside them (as root: "
                    f"apt-get install iptables): {exc}")
    try:
        with TestNetwork(["probe1", "probe2"], iptables=iptables) as network:
            crossing = {route: network.connects(*route) for route in
                        (("probe1", "probe2"), (OUTSIDE, "probe1"), ("probe2", OUTSIDE))}
    except (NetworkError, OSError) as exc:
        pytest.skip(f"the chaos suite cannot build a test network here: {exc}")
    blocked = [f"{a} -> {b}" for (a, b), ok in crossing.items() if not ok]
    if blocked:
        pytest.skip(f"TCP does not cross the test bridge ({', '.join(blocked)}): a firewall "
                    f"on bridged traffic (br_netfilter)?")
    return iptables


@pytest.fixture(scope="session")
def chaos_iptables() -> str:
    """Probed once: a skip here is cached by pytest and repeated for every test that asks."""
    return _probe()


@pytest.fixture
def make_network(chaos_iptables, processes):
    """make_network(hosts) -> a TestNetwork, torn down after the test: first every process
    the test started (a namespace outlives its name while a process runs in it), then the
    networks."""
    made: list[TestNetwork] = []

    def make(hosts) -> TestNetwork:
        network = TestNetwork(list(hosts), iptables=chaos_iptables)
        made.append(network)
        return network
    yield make
    try:
        processes.close()
    finally:
        errors = []
        for network in made:
            try:
                network.close()
            except NetworkError as exc:
                errors.append(exc)
        if errors:
            raise errors[0]

