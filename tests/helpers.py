"""Shared test helpers: free ports, waiting on conditions, real node processes."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

REPO_ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


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
                   timeout: float = 60.0) -> None:
    """Wait until the process at endpoint answers a ping; fail at once if it exits."""
    from yaddb import Client
    from yaddb.errors import YaddbError
    with Client(endpoint, timeout=1.0) as client:
        def answers() -> bool:
            if proc.poll() is not None:
                raise AssertionError(f"{what} exited with {proc.returncode}:\n{log()}")
            try:
                return client.ping()
            except YaddbError:
                return False
        wait_for(answers, f"{what} to answer", timeout)


class NodeProcess:
    """A real `run_node.py` process on a free port, in its own process group."""

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
        self.log_path = log_path or data_dir.parent / f"node-{self.port}.log"
        if command is None:
            command = ["-p", str(self.port), "--pub-port", str(free_port()),
                       "--data-dir", str(data_dir), *args, *role]
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, str(REPO_ROOT / "run_node.py"), *command],
                stdout=log, stderr=subprocess.STDOUT, env=env or child_env(),
                cwd=str(data_dir.parent), start_new_session=True)

    def wait_ready(self, timeout: float = 30.0) -> "NodeProcess":
        wait_answering(self.proc, self.endpoint, self.log, f"node on port {self.port}", timeout)
        return self

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:]

    def kill(self, signum: int = signal.SIGKILL) -> int:
        signal_group(self.proc.pid, signum)
        return self.proc.wait(timeout=60)

    def stop(self) -> int:
        """SIGTERM, and SIGKILL if it does not stop within the deadline."""
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
                return self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                pass
        return self.kill()
