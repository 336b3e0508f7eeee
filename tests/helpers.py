"""Shared test helpers: free ports, waiting on conditions, our programs as real processes.

Every process a test starts is a `yaddb.supervisor.Child` (its own process group, its output in
a log file, tied to this process by a pipe) wrapped in NodeProcess or RouterProcess, and
registered with the `processes` fixture (tests/conftest.py) as it starts, so teardown stops it
even when it never answered.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from itertools import count
from pathlib import Path
from typing import Callable, Optional, Union

from yaddb.supervisor import KILL_WAIT_S, Child, free_port
from tests import proc_table
from tests.proc_table import Proc

REPO_ROOT = Path(__file__).resolve().parents[1]
STOP_S = 60.0  # generous: the machine may be loaded
_serial = count()

__all__ = ["REPO_ROOT", "free_port", "wait_for", "child_env", "signal_group", "wait_answering",
           "run_script", "NodeProcess", "RouterProcess", "Processes"]


def wait_for(condition: Callable[[], object], what: str, timeout: float = 60.0) -> object:
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(0.01)


def child_env(**extra: str) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("YADDB_")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    env.update(extra)
    return env


def signal_group(pgid: int, signum: int = signal.SIGKILL) -> None:
    """Signal a process group; one that is already gone is no error."""
    try:
        os.killpg(pgid, signum)
    except ProcessLookupError:
        pass


def wait_answering(proc: subprocess.Popen, endpoint: str, log: Callable[[], str], what: str,
                   timeout: float = 60.0, keys: Optional[str] = None) -> None:
    """Wait until the process at endpoint answers a ping; fail at once if it exits. `keys`:
    a folder with a client key, for a node started with --keys-dir."""
    from yaddb import Client
    from yaddb.errors import YaddbError
    with Client(endpoint, timeout=1.0, keys=keys) as client:
        def answers() -> bool:
            if proc.poll() is not None:
                raise AssertionError(f"{what} exited with {proc.returncode}:\n{log()[-4000:]}")
            try:
                return client.ping()
            except YaddbError:
                return False
        wait_for(answers, f"{what} to answer", timeout)


def run_script(script: str, *args: str, cwd: Path, env: Optional[dict] = None,
               timeout: float = 60.0) -> subprocess.CompletedProcess:
    """Run one of our scripts to its end (--help, a refused start): output captured as text;
    on timeout it is killed and the test fails."""
    return subprocess.run([sys.executable, str(REPO_ROOT / script), *args], cwd=cwd,
                          env=child_env() if env is None else env, stdin=subprocess.DEVNULL,
                          capture_output=True, text=True, timeout=timeout)


class _Program:
    """One of our scripts run as a tied Child, tagged so that it and everything it starts can
    be found in the process table (tests/proc_table.py) even after it died."""

    def __init__(self, name: str, script: str, argv: list[str], log_path: Path,
                 env: Optional[dict], cwd: Path) -> None:
        self.tag = f"{name}-{next(_serial)}"
        env = dict(child_env() if env is None else env)
        env[proc_table.SESSION_VARIABLE] = proc_table.session_tag(self.tag)
        self.log_path = Path(log_path)
        self.child = Child(name, [sys.executable, str(REPO_ROOT / script), *argv],
                           log_path=str(self.log_path), env=env, cwd=str(cwd))
        self.child.start()

    @property
    def proc(self) -> subprocess.Popen:
        return self.child.proc

    @property
    def pid(self) -> int:
        return self.child.pid

    @property
    def running(self) -> bool:
        return self.child.running

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def kill(self, signum: int = signal.SIGKILL) -> int:
        """Send `signum` to its process group and wait for it to exit; its exit code."""
        if not self.running:  # reaped already: its pid may be another process's by now
            return self.child.returncode
        self.child.signal(signum)
        code = self.child.wait(STOP_S if signum != signal.SIGKILL else KILL_WAIT_S)
        if code is None:
            self.child.kill()
            raise AssertionError(f"{self.child.name} did not exit on signal {signum}:\n"
                                 f"{self.child.log_tail()}")
        return code

    def stop(self, timeout: float = STOP_S) -> Optional[int]:
        """SIGTERM, and SIGKILL if it does not stop within `timeout`; its exit code."""
        if self.child.proc is None or self.child.returncode is not None:
            return self.child.returncode
        return self.child.stop(timeout)

    def leftovers(self) -> dict[Proc, str]:
        """Processes started under this one's tag (itself, its children) still running."""
        return proc_table.ours(self.tag)

    def close(self) -> None:
        """Teardown: stop it, then kill anything it started that outlived it."""
        try:
            self.stop()
        finally:
            _kill_and_reap(self.leftovers())


def _kill_and_reap(processes, timeout: float = 30.0) -> None:
    processes = set(processes)
    for process in processes:  # whole groups: a node's workers are in its group
        if proc_table.alive(process) and proc_table.group_of(process.pid) == process.pid:
            signal_group(process.pid)
    proc_table.kill(processes)
    wait_for(lambda: not any(proc_table.alive(p) for p in processes),
             f"killed processes {sorted(p.pid for p in processes)} to go", timeout)


class NodeProcess(_Program):
    """A real `run_node.py` process on a free port."""

    def __init__(self, data_dir: Path, *args: str, port: int = 0, log_path: Path | None = None,
                 command: list[str] | None = None, env: dict | None = None,
                 role: tuple[str, ...] = ("master",)) -> None:
        """`command` replaces the flags this class would pass (port and data dir come from
        the environment or .env then; give `port` so the class knows where to look). `role`
        ends the command line: ("master",), or ("slave", "--master-host", ...)."""
        self.port = port or free_port()
        self.data_dir = data_dir
        self.endpoint = f"tcp://127.0.0.1:{self.port}"
        self.address = f"127.0.0.1:{self.port}"
        self.keys = args[args.index("--keys-dir") + 1] if "--keys-dir" in args else None
        self.pub_port = free_port()
        if command is None:
            command = ["-p", str(self.port), "--pub-port", str(self.pub_port),
                       "--data-dir", str(data_dir), *args, *role]
        super().__init__(f"node-{self.port}", "run_node.py", command,
                         log_path or data_dir.parent / f"node-{self.port}.log", env,
                         data_dir.parent)

    def wait_ready(self, timeout: float = 30.0) -> "NodeProcess":
        wait_answering(self.proc, self.endpoint, self.log, f"node on port {self.port}", timeout,
                       self.keys)
        return self


class RouterProcess(_Program):
    """A real `run_router.py` process; with no --nodes in `args`, the embedded cluster.

    Its nodes are its children while it lives; they are recorded whenever they are looked
    up, so kill() still finds them once the router is dead (they are orphans then)."""

    def __init__(self, data_dir: Path, *args: str, zmq_port: int = 0, http_port: int = 0,
                 log_path: Path | None = None, command: list[str] | None = None,
                 env: dict | None = None, cwd: Path | None = None) -> None:
        """`command` replaces every flag this class would pass; give `zmq_port` and
        `http_port` then if they come from elsewhere (environment, .env)."""
        self.zmq_port = zmq_port or free_port()
        self.http_port = http_port or free_port()
        self.data_dir = data_dir
        self.endpoint = f"tcp://127.0.0.1:{self.zmq_port}"
        self.url = f"http://127.0.0.1:{self.http_port}"
        self.nodes_seen: set[Proc] = set()
        cwd = cwd or data_dir.parent
        if command is None:
            command = ["--zmq-port", str(self.zmq_port), "-p", str(self.http_port),
                       "--data-dir", str(data_dir), *args]
        super().__init__(f"router-{self.zmq_port}", "run_router.py", command,
                         log_path or cwd / f"router-{self.zmq_port}.log", env, cwd)

    def wait_ready(self, timeout: float = 60.0) -> "RouterProcess":
        """Both fronts up: the zmq one answers first, the HTTP edge starts after it, and the
        addresses are logged last."""
        wait_answering(self.proc, self.endpoint, self.log, "the router", timeout)
        wait_for(lambda: "native clients: " in self.log(), "the router to log its addresses",
                 timeout)
        self.node_pids()
        return self

    def node_pids(self) -> list[int]:
        """pids of the run_node.py processes whose parent is this router (recorded)."""
        if not self.running:
            return []
        nodes = [pid for pid in proc_table.children_of(self.pid)
                 if "-m yaddb.node" in proc_table.cmdline(pid)]
        self.nodes_seen.update(p for p in map(proc_table.proc, nodes) if p is not None)
        return nodes

    def master_pid(self, index: int) -> int:
        """pid of partition `index`'s master, by the port the router lists for it."""
        from yaddb import Client
        with Client(self.endpoint, timeout=5) as client:
            port = client.stats()["partitions"][index]["master"].rpartition(":")[2]
        for pid in self.node_pids():
            args = proc_table.cmdline(pid).split()
            if args[args.index("-p") + 1] == port and "master" in args:
                return pid
        raise AssertionError(f"no master process on port {port}")

    def kill(self, signum: int = signal.SIGKILL) -> Optional[int]:
        """Kill the router, then every node it started: first freeze it (SIGSTOP), so its
        supervisor restarts none, and record its nodes; then SIGKILL it, then them."""
        if signum != signal.SIGKILL:
            return super().kill(signum)
        if self.running:
            self.child.signal(signal.SIGSTOP)
            self.node_pids()
        code = self.child.kill() if self.running else self.child.returncode
        _kill_and_reap({p for p in self.nodes_seen if proc_table.alive(p)} | set(self.leftovers()))
        return code

    def close(self) -> None:
        try:
            self.stop()
        finally:
            self.kill()


Stoppable = Union[_Program, Child]


class Processes:
    """The processes one test starts, each registered the moment it starts (before anything
    waits on it), all stopped at teardown, the last started first."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.started: list[Stoppable] = []

    def add(self, process: Stoppable) -> Stoppable:
        self.started.append(process)
        return process

    def node(self, data_dir: Path, *args: str, **options) -> NodeProcess:
        return self.add(NodeProcess(data_dir, *args, **options))

    def router(self, data_dir: Path, *args: str, **options) -> RouterProcess:
        return self.add(RouterProcess(data_dir, *args, **options))

    def child(self, name: str, argv: list[str], **options) -> Child:
        """Any other command, as a started Child (its own group, its output in `log_path`)."""
        child = Child(name, argv, **options)
        self.add(child)
        return child.start()

    def close(self) -> None:
        errors = []
        for process in reversed(self.started):
            try:
                if isinstance(process, Child):
                    if process.returncode is None:  # else reaped: its pid may be another's now
                        process.stop(STOP_S)
                else:
                    process.close()
            except Exception as exc:  # stop the others anyway
                errors.append(exc)
        if errors:
            raise errors[0]
