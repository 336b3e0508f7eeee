"""Starting, watching, stopping and killing our processes: the embedded cluster, tests and benches.

Every child runs in a process group of its own (so a stop reaches its workers too, and a
Ctrl-C meant for its parent does not) and, when it takes `--parent-fd`, holds the read end of
a pipe whose write end only this process has. When this process dies, however it dies, the
kernel closes the write end; the child reads end-of-file and stops cleanly, flushing its data.
A pipe rather than PR_SET_PDEATHSIG: the death signal fires when the *thread* that started the
child ends (a restart from a watcher thread would arm it on that thread), needs a preexec_fn,
which is unsafe in a process with threads such as a ZeroMQ context's, and is Linux-only; the
pipe is plain POSIX, survives exec, and reaches the child's normal stop path.
"""
from __future__ import annotations

import fcntl
import gc
import logging
import os
import signal
import socket
import subprocess
import threading
import time
from typing import Callable, Iterable, Optional, Sequence

from yaddb.errors import DataDirLocked

log = logging.getLogger(__name__)

PARENT_FD_VARIABLE = "YADDB_PARENT_FD"  # the --parent-fd flag of run_node.py and run_router.py
KILL_WAIT_S = 10.0  # after SIGKILL the kernel, not the child, decides; this only bounds a test


# Python's collector by default makes a pass over young objects every 700 new ones, and over
# the whole heap each time it grew by a quarter: a node whose write backlog and memtable held
# a few hundred thousand objects spent 29-38 us on a set (handle and publish, in-process)
# against 21-24 us with these thresholds. Cycles are still collected, less often.
SERVER_GC_THRESHOLDS = (50_000, 20, 20)


def tune_gc_for_serving() -> None:
    """Fewer collections, for a long-running server process (a node, a router)."""
    gc.set_threshold(*SERVER_GC_THRESHOLDS)


def free_port(host: str = "127.0.0.1") -> int:
    """A port nobody listens on now (it can be taken before the caller binds it)."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def watch_parent(fd: int, on_parent_gone: Callable[[], None]) -> threading.Thread:
    """Call `on_parent_gone` from a daemon thread once the pipe at `fd` reaches end of file,
    that is once the process holding its write end is gone."""
    def wait() -> None:
        try:
            while os.read(fd, 1):
                pass  # a supervisor never writes; read on until the end
        except OSError as exc:
            log.warning("watching the supervisor's pipe failed: %s", exc)
        log.warning("the supervising process is gone; stopping")
        on_parent_gone()

    thread = threading.Thread(target=wait, name="yaddb-parent-watch", daemon=True)
    thread.start()
    return thread


class Child:
    """One child process: its own process group, its output in a log file, tied to us by a pipe.

    `argv` is the whole command. With `tie=True` the child gets the pipe's read end as
    YADDB_PARENT_FD (the environment form of `--parent-fd`, which run_node.py and
    run_router.py take), so it stops when this process dies.
    """

    def __init__(self, name: str, argv: Sequence[str], *, log_path: Optional[str] = None,
                 env: Optional[dict] = None, cwd: Optional[str] = None, tie: bool = True) -> None:
        self.name = name
        self.argv = list(argv)
        self.log_path = log_path
        self.env = env
        self.cwd = cwd
        self.tie = tie
        self.proc: Optional[subprocess.Popen] = None
        self._tie_fd: Optional[int] = None

    def start(self) -> "Child":
        """Start (or start again) the command; returns self."""
        self._close_tie()
        env = dict(os.environ if self.env is None else self.env)
        pass_fds: tuple[int, ...] = ()
        if self.tie:
            read_end, self._tie_fd = os.pipe()  # both close-on-exec; pass_fds opens one
            env[PARENT_FD_VARIABLE] = str(read_end)
            pass_fds = (read_end,)
        out = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL
        try:
            self.proc = subprocess.Popen(self.argv, stdin=subprocess.DEVNULL, stdout=out,
                                         stderr=subprocess.STDOUT, env=env, cwd=self.cwd,
                                         pass_fds=pass_fds, start_new_session=True)
        except BaseException:
            self._close_tie()
            raise
        finally:
            if self.log_path:
                out.close()  # the child has its own copy
            if pass_fds:
                os.close(pass_fds[0])
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None, f"{self.name} was never started"
        return self.proc.pid

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    @property
    def returncode(self) -> Optional[int]:
        return None if self.proc is None else self.proc.poll()

    def signal(self, signum: int) -> None:
        """Send `signum` to the child's whole process group (its workers too)."""
        if self.proc is not None:
            try:
                os.killpg(self.proc.pid, signum)
            except ProcessLookupError:
                pass

    def terminate(self) -> None:
        """Ask the child to stop (SIGTERM) without waiting; see wait(). Only the child gets
        SIGTERM: stopping its own workers, in their time, is part of its clean stop."""
        if self.running:
            self.signal(signal.SIGCONT)  # a stopped (SIGSTOP) group could not act on SIGTERM
            try:
                self.proc.send_signal(signal.SIGTERM)
            except ProcessLookupError:
                pass

    def wait(self, timeout: Optional[float] = None) -> Optional[int]:
        """The exit code, or None if it still runs after `timeout` seconds."""
        if self.proc is None:
            return None
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return None
        self._close_tie()
        return code

    def kill(self) -> Optional[int]:
        """SIGKILL the whole process group and reap the child."""
        self.signal(signal.SIGKILL)
        return self.wait(KILL_WAIT_S)

    def stop(self, timeout: float = 10.0) -> Optional[int]:
        """SIGTERM, then SIGKILL if it has not stopped within `timeout`; returns its exit code."""
        stop_all([self], timeout)
        return self.returncode

    def log_tail(self, chars: int = 4000) -> str:
        if not self.log_path or not os.path.exists(self.log_path):
            return ""
        with open(self.log_path, "rb") as file:
            file.seek(max(0, os.path.getsize(self.log_path) - chars))
            return file.read().decode(errors="replace")

    def _close_tie(self) -> None:
        if self._tie_fd is not None:
            os.close(self._tie_fd)
            self._tie_fd = None


def stop_all(children: Iterable[Child], timeout: float = 10.0) -> None:
    """Stop children together: SIGTERM to all at once, one shared deadline, SIGKILL after it,
    then SIGKILL whatever each left in its process group, as Child.stop does for one."""
    children = list(children)
    for child in children:
        child.terminate()
    deadline = time.monotonic() + timeout
    for child in children:
        if child.wait(max(0.0, deadline - time.monotonic())) is None and child.running:
            log.warning("%s did not stop within %g s; killing it", child.name, timeout)
            child.kill()
        child.signal(signal.SIGKILL)


class Supervisor:
    """Restarts children that exit on their own, until stop_watching()."""

    def __init__(self, children: Iterable[Child], check_every_s: float = 0.5) -> None:
        self.children = list(children)
        self.restarts: dict[str, int] = {child.name: 0 for child in self.children}
        self._check_every_s = check_every_s
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="yaddb-supervisor", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _watch(self) -> None:
        while not self._stopping.wait(self._check_every_s):
            for child in self.children:
                code = child.returncode
                if code is not None and not self._stopping.is_set():
                    self.restarts[child.name] += 1
                    log.error("%s exited with %s; restarting it (restart %d)", child.name, code,
                              self.restarts[child.name])
                    child.start()

    def stop_watching(self) -> None:
        """No more restarts; the children keep running."""
        self._stopping.set()
        if self._thread.is_alive():
            self._thread.join()


class DirectoryClaim:
    """An exclusive flock on DIR/SUPERVISOR.lock, held while one supervisor runs children on
    the data under DIR: a second one gets `DataDirLocked` instead of sharing their files."""

    def __init__(self, directory: str) -> None:
        os.makedirs(directory, exist_ok=True)
        self._fd = os.open(os.path.join(directory, "SUPERVISOR.lock"), os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self._fd)
            raise DataDirLocked(f"{directory} is in use by another router or supervisor; stop "
                                f"it or choose another --data-dir") from None
        os.ftruncate(self._fd, 0)
        os.write(self._fd, f"{os.getpid()}\n".encode())

    def release(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)  # closing the last descriptor drops the lock
            self._fd = -1
