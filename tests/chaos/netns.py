"""A test network of hosts on one machine: network namespaces on a bridge, built with iproute2.

    with TestNetwork(["master", "slave1", "router"], iptables=find_iptables()) as net:
        child = net.spawn("master", "node", [python, "run_node.py", "-H", net.address("master"), ...])
        net.cut_off("master")          # its link down: nobody reaches it, it reaches nobody
        net.drop("master", "slave1")   # iptables in the namespaces, both ways (one_way=True: one)
        net.lose_packets("slave1", 0.3)
        net.split(["slave1"], ["master", "router", OUTSIDE])
        net.heal()                     # every link up, every rule gone

The layout: a bridge in this (the root) namespace holds the subnet's first address; this test
process reaches every host through it and counts as the host OUTSIDE. Each host is a namespace
with loopback up and one veth pair whose outer end is a port of the bridge. No host has a
default route and the root namespace forwards nothing, so traffic stays on loopback, the bridge
and the namespaces. Faults are made only inside the namespaces (their iptables tables die with
them) or by setting a host's veth down: the root namespace's firewall is never touched.

Left out: delay. This kernel has no `netem` qdisc, so latency would need a delaying proxy;
the faults here are loss (iptables' `statistic` match), cuts and splits.

Names carry this process's pid (`yc<pid hex>-<n>`), so runs side by side never share a device;
the subnet is claimed with a lock file and skipped when any address or route already uses it.
Leftovers of a run that was killed (its pid gone, its subnet lock free) are removed on the next
build. Everything is torn down by close(), also after a failed build.
"""
from __future__ import annotations

import ctypes
import fcntl
import ipaddress
import os
import re
import socket
import subprocess
import tempfile
import threading
import time
from itertools import count
from typing import Callable, Iterable, Optional, Sequence

from yaddb.supervisor import Child

OUTSIDE = "outside"  # the root namespace: this test process, at the bridge's address
SUBNETS = ipaddress.ip_network("10.213.0.0/16")  # /24s of it; private and unlikely to clash
COMMAND_TIMEOUT_S = 15.0
LINK_UP_S = 10.0  # a link set up says so within this (the kernel defers it up to about 1 s)
CLONE_NEWNET = 0x40000000
NAME = re.compile(r"^yc([0-9a-f]+)-")  # bridges, veths and namespaces of ours
_networks = count()


class NetworkError(RuntimeError):
    """An ip or iptables command failed: its command line and its error output."""


def run(*argv: str, check: bool = True) -> subprocess.CompletedProcess:
    done = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                          timeout=COMMAND_TIMEOUT_S)
    if check and done.returncode != 0:
        raise NetworkError(f"`{' '.join(argv)}` failed ({done.returncode}): "
                           f"{done.stderr.strip() or done.stdout.strip()}")
    return done


def find_iptables() -> str:
    """The first iptables that can add a rule with the statistic match inside a namespace:
    the system's choice (`iptables`, an update-alternatives link) first, then each backend
    by name, because a kernel may lack nf_tables (then only -legacy works) or the reverse.
    Raises NetworkError saying what each one answered."""
    scratch = f"yc{os.getpid():x}-probe"
    answers = []
    run("ip", "netns", "add", scratch)
    try:
        for command in ("iptables", "iptables-nft", "iptables-legacy"):
            try:
                run("ip", "netns", "exec", scratch, command, "-w", "-A", "INPUT", "-s",
                    "192.0.2.9", "-m", "statistic", "--mode", "random", "--probability", "0.5",
                    "-j", "DROP")
                run("ip", "netns", "exec", scratch, command, "-w", "-F")
                return command
            except (NetworkError, OSError) as exc:
                answers.append(f"{command}: {exc}")
    finally:
        run("ip", "netns", "del", scratch, check=False)
    raise NetworkError("no iptables works inside a network namespace: " + "; ".join(answers))


def in_namespace(namespace: str, action: Callable[[], object]) -> object:
    """Run `action` on a new thread that has joined `namespace` (setns applies to one thread
    only), and return its result: sockets it creates stay in that namespace for good."""
    result: dict = {}

    def enter_and_run() -> None:
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            fd = os.open(f"/run/netns/{namespace}", os.O_RDONLY)
            try:
                if libc.setns(fd, CLONE_NEWNET) != 0:
                    raise OSError(ctypes.get_errno(), f"setns into {namespace} failed")
            finally:
                os.close(fd)
            result["value"] = action()
        except BaseException as exc:  # handed to the caller
            result["error"] = exc

    thread = threading.Thread(target=enter_and_run, name=f"netns-{namespace}", daemon=True)
    thread.start()
    thread.join(COMMAND_TIMEOUT_S)
    if "error" in result:
        raise result["error"]
    if "value" not in result:
        raise NetworkError(f"nothing came back from namespace {namespace}")
    return result["value"]


def _state_up(link_line: str) -> bool:
    return " state UP " in link_line


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class TestNetwork:
    """Hosts (network namespaces) on one bridge; see the module docstring."""

    __test__ = False  # a helper, not a pytest test class

    def __init__(self, hosts: Sequence[str], iptables: str = "iptables") -> None:
        if len(set(hosts)) != len(hosts) or OUTSIDE in hosts or not 1 <= len(hosts) <= 200:
            raise ValueError(f"hosts must be 1 to 200 distinct names other than {OUTSIDE!r}")
        self.hosts = list(hosts)
        self.iptables = iptables
        self.number = next(_networks)
        self.prefix = f"yc{os.getpid():x}-{self.number:x}"
        self.bridge = f"{self.prefix}b"
        self._lock_fd: Optional[int] = None
        self._made_namespaces: list[str] = []
        self._cut_off: set[str] = set()
        self.subnet: Optional[ipaddress.IPv4Network] = None
        try:
            self._build()
        except BaseException:
            self.close()
            raise

    # -- names and addresses -------------------------------------------------------------

    def namespace(self, host: str) -> str:
        return f"{self.prefix}-{host}"

    def veth(self, host: str) -> str:
        """The outer end of the host's veth pair (on the bridge); inside it is eth0."""
        return f"{self.prefix}v{self.hosts.index(host)}"

    def address(self, host: str) -> str:
        assert self.subnet is not None
        offset = 1 if host == OUTSIDE else 2 + self.hosts.index(host)
        return str(self.subnet.network_address + offset)

    # -- building and tearing down ---------------------------------------------------------

    def _build(self) -> None:
        remove_leftovers()
        self.subnet = self._claim_subnet()
        length = self.subnet.prefixlen
        run("ip", "link", "add", self.bridge, "type", "bridge", "forward_delay", "0")
        run("ip", "addr", "add", f"{self.address(OUTSIDE)}/{length}", "dev", self.bridge)
        run("ip", "link", "set", self.bridge, "up")
        for host in self.hosts:
            namespace = self.namespace(host)
            run("ip", "netns", "add", namespace)
            self._made_namespaces.append(namespace)
            run("ip", "link", "add", self.veth(host), "type", "veth", "peer", "name", "eth0",
                "netns", namespace)
            run("ip", "link", "set", self.veth(host), "master", self.bridge, "up")
            run("ip", "-n", namespace, "addr", "add", f"{self.address(host)}/{length}", "dev", "eth0")
            run("ip", "-n", namespace, "link", "set", "lo", "up")
            run("ip", "-n", namespace, "link", "set", "eth0", "up")
        for host in self.hosts:  # the kernel reports carrier in its own time
            self._wait_link_up(host)

    def _claim_subnet(self) -> ipaddress.IPv4Network:
        """A /24 of SUBNETS that no address or route here touches, held by a lock file (two
        runs checking at once would otherwise both find the same one free)."""
        used = run("ip", "-o", "-4", "addr").stdout + run("ip", "-4", "route").stdout
        taken = [ipaddress.ip_network(text, strict=False)
                 for text in re.findall(r"(\d+\.\d+\.\d+\.\d+(?:/\d+)?)", used)]
        candidates = list(SUBNETS.subnets(new_prefix=24))
        # Each network of this process starts elsewhere: a subnet just given back may still
        # be in use by a namespace the kernel is destroying in the background.
        start = (os.getpid() + 37 * self.number) % len(candidates)
        for subnet in candidates[start:] + candidates[:start]:
            if any(subnet.overlaps(other) for other in taken):
                continue
            fd = os.open(_lock_path(subnet), os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                continue
            self._lock_fd = fd
            return subnet
        raise NetworkError(f"every /24 of {SUBNETS} is in use on this machine")

    def close(self) -> None:
        """Delete the namespaces (their iptables rules go with them), the veths and the
        bridge; each step runs even when another failed, and the first failure is raised.
        Processes started in a host must be stopped first: a namespace outlives its name
        while a process still runs in it."""
        errors = []
        for namespace in self._made_namespaces:
            host = namespace[len(self.prefix) + 1:]
            for argv in (("ip", "link", "del", self.veth(host)), ("ip", "netns", "del", namespace)):
                done = run(*argv, check=False)
                if done.returncode != 0 and "Cannot find device" not in done.stderr \
                        and "No such file" not in done.stderr:
                    errors.append(f"{' '.join(argv)}: {done.stderr.strip()}")
        self._made_namespaces = []
        done = run("ip", "link", "del", self.bridge, check=False)
        if done.returncode != 0 and "Cannot find device" not in done.stderr:
            errors.append(f"ip link del {self.bridge}: {done.stderr.strip()}")
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # releases the subnet
            self._lock_fd = None
        if errors:
            raise NetworkError("tearing down the test network: " + "; ".join(errors))

    def __enter__(self) -> "TestNetwork":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    # -- processes -------------------------------------------------------------------------

    def spawn(self, host: str, name: str, argv: Sequence[str], *, log_path: str,
              env: Optional[dict] = None, cwd: Optional[str] = None) -> Child:
        """Start `argv` inside the host as a tied Child (its own process group; `ip netns
        exec` execs the command in place, so the pid is the command's and the tie's pipe fd
        survives). The Child restarts in the same host with start()."""
        child = Child(name, ["ip", "netns", "exec", self.namespace(host), *argv],
                      log_path=log_path, env=env, cwd=cwd, tie=True)
        return child.start()

    def connects(self, source: str, target: str, timeout: float = 0.5) -> bool:
        """Whether a TCP connection from `source` to `target` completes (a listener is opened
        in `target` for it): what tests of the faults themselves look at."""
        def listen() -> socket.socket:
            server = socket.socket()
            server.bind((self.address(target), 0))
            server.listen(4)
            return server

        def connect() -> bool:
            try:
                socket.create_connection((self.address(target), port), timeout=timeout).close()
                return True
            except OSError:
                return False

        server = listen() if target == OUTSIDE else in_namespace(self.namespace(target), listen)
        try:
            port = server.getsockname()[1]
            if source == OUTSIDE:
                return connect()
            return bool(in_namespace(self.namespace(source), connect))
        finally:
            server.close()

    # -- faults ------------------------------------------------------------------------------

    def cut_off(self, host: str) -> None:
        """The host's link down: it reaches nobody and nobody reaches it, this process neither."""
        run("ip", "link", "set", self.veth(host), "down")
        self._cut_off.add(host)

    def reconnect(self, host: str) -> None:
        """The host's link up again; returns once both ends say UP. The kernel passes carrier
        changes on in its own time (up to a second later), and a host is not healed before."""
        run("ip", "link", "set", self.veth(host), "up")
        self._cut_off.discard(host)
        self._wait_link_up(host)

    def _wait_link_up(self, host: str) -> None:
        deadline = time.monotonic() + LINK_UP_S
        while not (_state_up(run("ip", "-o", "link", "show", self.veth(host)).stdout) and
                   _state_up(run("ip", "-n", self.namespace(host), "-o", "link", "show",
                                 "eth0").stdout)):
            if time.monotonic() > deadline:
                raise NetworkError(f"{host}'s link is not up {LINK_UP_S:g} s after `ip link "
                                   f"set {self.veth(host)} up`")
            time.sleep(0.02)  # polling the kernel's link state

    def drop(self, source: str, target: str, one_way: bool = False) -> None:
        """Drop packets from `source` to `target` (and back, unless one_way). Rules go in a
        namespace at either end, never in the root namespace (OUTSIDE)."""
        if source == target:
            raise ValueError("a host is never cut from itself")
        if source != OUTSIDE:
            self._iptables(source, "-A", "OUTPUT", "-d", self.address(target), "-j", "DROP")
        else:
            self._iptables(target, "-A", "INPUT", "-s", self.address(source), "-j", "DROP")
        if not one_way:
            self.drop(target, source, one_way=True)

    def split(self, *groups: Iterable[str]) -> None:
        """A partition of the network: hosts in different groups no longer reach each other;
        hosts in no group keep reaching everyone. OUTSIDE may be in a group."""
        groups = [list(group) for group in groups]
        for index, group in enumerate(groups):
            for other in groups[index + 1:]:
                for source in group:
                    for target in other:
                        self.drop(source, target)

    def lose_packets(self, host: str, probability: float) -> None:
        """Drop each packet into and out of the host's eth0 at random with `probability`."""
        if not 0.0 < probability < 1.0:
            raise ValueError("a loss probability is between 0 and 1")
        for chain, interface in (("INPUT", "-i"), ("OUTPUT", "-o")):
            self._iptables(host, "-A", chain, interface, "eth0", "-m", "statistic", "--mode",
                           "random", "--probability", f"{probability:.3f}", "-j", "DROP")

    def heal(self) -> None:
        """Every link up and every host's rules gone. After a cut, every neighbour (ARP) cache
        of the network is emptied too: a host that sent during the cut keeps an unresolved
        entry that holds its packets until its next probe, up to a second after the heal."""
        was_cut = bool(self._cut_off)
        for host in list(self._cut_off):
            self.reconnect(host)
        for host in self.hosts:
            self._iptables(host, "-F")
            if was_cut:
                run("ip", "-n", self.namespace(host), "neigh", "flush", "all")
        if was_cut:
            run("ip", "neigh", "flush", "dev", self.bridge)  # our bridge's entries only

    def rules(self, host: str) -> str:
        return run("ip", "netns", "exec", self.namespace(host), self.iptables, "-w", "-S").stdout

    def _iptables(self, host: str, *args: str) -> None:
        if host == OUTSIDE:
            raise ValueError("no rule is ever put in the root namespace")
        run("ip", "netns", "exec", self.namespace(host), self.iptables, "-w", *args)


def _lock_path(subnet: ipaddress.IPv4Network) -> str:
    return os.path.join(tempfile.gettempdir(), f"yaddb-chaos-{subnet.network_address}.lock")


def remove_leftovers() -> None:
    """Delete namespaces and bridges a killed run of ours left: their owner's pid is gone.
    A bridge goes only when its subnet's lock is free (no live run holds that subnet)."""
    namespaces = run("ip", "netns", "list", check=False).stdout.split()
    for name in namespaces:
        match = NAME.match(name)
        if match and not _pid_alive(int(match.group(1), 16)):
            run("ip", "netns", "del", name, check=False)
    links = run("ip", "-o", "-4", "addr", "show", "type", "bridge", check=False).stdout
    for name, network in re.findall(r"^\d+:\s+(\S+)\s+inet\s+(\S+)", links, re.M):
        match = NAME.match(name)
        if not match or _pid_alive(int(match.group(1), 16)):
            continue
        fd = os.open(_lock_path(ipaddress.ip_network(network, strict=False)),
                     os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            run("ip", "link", "del", name, check=False)
        except BlockingIOError:
            pass
        finally:
            os.close(fd)
