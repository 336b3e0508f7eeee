"""What every benchmark here does alike: start and stop processes, place them on CPUs, read
their CPU time, take percentiles and print tables.

Processes go through yaddb.supervisor: each child in a process group of its own with its
output in a log file. Ours (run_node.py, run_router.py, the edge, a benchmark's own worker) are
tied to this process by a pipe and stop when the benchmark dies, however it dies; foreign
programs (redis-server, wrk) are not, and are stopped by the benchmark's cleanup.
Importing this module puts the repository on sys.path, for `import yaddb`.
"""
from __future__ import annotations

import contextlib
import http.client
import math
import multiprocessing
import os
import signal
import sys
import time
from typing import Callable, Iterable, Iterator, Optional, Sequence

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO_ROOT not in sys.path:
    sys.path.insert(0, REPO_ROOT)

from yaddb.supervisor import (PARENT_FD_VARIABLE, Child, free_port, stop_all,  # noqa: E402
                              watch_parent)

START_TIMEOUT_S = 30.0  # for a server to answer its first request
STOP_TIMEOUT_S = 15.0   # from SIGTERM to SIGKILL
LOCALHOST = "127.0.0.1"
# Client processes are spawned, not forked: a fork would inherit this process's ZeroMQ context.
SPAWN = multiprocessing.get_context("spawn")


class BenchError(Exception):
    """Something that stops a benchmark (not a missed goal), said for a person."""


# -- children --------------------------------------------------------------------------------

def child_env() -> dict:
    """This environment without YADDB_* settings, so only a benchmark's flags configure its
    servers, and with the repository importable."""
    env = {name: value for name, value in os.environ.items() if not name.startswith("YADDB_")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [REPO_ROOT, env.get("PYTHONPATH")]))
    return env


def launch(name: str, argv: Sequence[str], workdir: str, *, ours: bool = True,
           cpus: Optional[set[int]] = None) -> Child:
    """Start `argv` with its output in workdir/NAME.log and workdir as its current directory
    (so no .env file of the caller's is read), on `cpus` (None: wherever this thread may run).
    `ours`: tie it to this process (for our programs; foreign ones ignore the pipe)."""
    child = Child(name, argv, log_path=os.path.join(workdir, name + ".log"), env=child_env(),
                  cwd=workdir, tie=ours)
    with on_cpus(cpus):
        child.start()
    return child


def check_running(child: Child) -> None:
    """BenchError with the end of its log if `child` has exited."""
    if not child.running:
        child.stop()  # anything it left in its process group
        raise BenchError(f"{child.name} exited with code {child.returncode}:\n{child.log_tail()}")


def wait_ready(child: Child, ready: Callable[[], bool], timeout: float = START_TIMEOUT_S,
               what: str = "answer") -> None:
    """Return once ready() is true; else stop the child and raise BenchError with its log.
    An exception from ready() means "not yet"."""
    deadline = time.monotonic() + timeout
    while True:
        check_running(child)
        try:
            if ready():
                return
        except Exception:
            pass
        if time.monotonic() > deadline:
            child.stop()
            raise BenchError(f"{child.name} did not {what} within {timeout:g} s:\n"
                             f"{child.log_tail()}")
        time.sleep(0.05)


def run_to_end(name: str, argv: Sequence[str], workdir: str, *, ours: bool,
               timeout: Optional[float] = None, cpus: Optional[set[int]] = None,
               echo: bool = False) -> tuple[Optional[int], str]:
    """Run a command to its end: (exit code, its output). The code is None when it was killed
    after `timeout` s. `echo` copies its output to stderr as it comes."""
    log_path = os.path.join(workdir, name + ".log")
    earlier_runs = os.path.getsize(log_path) if os.path.exists(log_path) else 0
    child = launch(name, argv, workdir, ours=ours, cpus=cpus)
    deadline = math.inf if timeout is None else time.monotonic() + timeout
    code, output = None, []
    with open(log_path, "rb") as log:
        log.seek(earlier_runs)  # the log file is appended to
        try:
            while code is None and time.monotonic() < deadline:
                code = child.wait(0.2)
                output.append(log.read())
                if echo:
                    sys.stderr.buffer.write(output[-1])
                    sys.stderr.flush()
        finally:
            if code is None:
                child.kill()
        output.append(log.read())
    return code, b"".join(output).decode(errors="replace")


def exit_with_parent() -> None:
    """In a process started by launch(ours=True): end it and its process group when the
    benchmark that started it is gone."""
    fd = os.environ.get(PARENT_FD_VARIABLE)
    if fd is not None:
        watch_parent(int(fd), lambda: os.killpg(0, signal.SIGKILL))


def client_to(port: int, **options):
    """A yaddb.Client to a node or router on `port` of this machine (imported here, not at the
    top: the storage engine's benchmark must not load ZeroMQ)."""
    from yaddb import Client
    return Client(f"tcp://{LOCALHOST}:{port}", **options)


def answers_ping(port: int, keys: Optional[str] = None) -> Callable[[], bool]:
    """A readiness check: the node or router on `port` answers a ping (with `keys`, a folder
    of CURVE keys: a client of a node started with --keys-dir)."""
    def ping() -> bool:
        with client_to(port, timeout=0.5, keys=keys) as client:
            return client.ping()
    return ping


def start_node(workdir: str, name: str, flags: Sequence[str],
               cpus: Optional[set[int]] = None, keys: Optional[str] = None) -> tuple[Child, int]:
    """run_node.py on free ports (request and write-log port: the default write-log port,
    request port + 1, may be taken) with its data in workdir/NAME; (child, request port) once
    it answers a ping. `flags` are the rest of its command line (--fsync ..., master). `keys`: a
    folder of CURVE keys (python3 -m yaddb keygen), given as --keys-dir and used by the ping."""
    port = free_port()
    child = launch(name, [sys.executable, os.path.join(REPO_ROOT, "run_node.py"), "-p", str(port),
                          "--pub-port", str(free_port()), "--data-dir",
                          os.path.join(workdir, name),
                          *(["--keys-dir", keys] if keys else []), *flags], workdir, cpus=cpus)
    wait_ready(child, answers_ping(port, keys))
    return child, port


def interrupt_on_sigterm() -> None:
    """Make SIGTERM raise KeyboardInterrupt, as Ctrl-C does, so the cleanups run."""
    def interrupt(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")
    signal.signal(signal.SIGTERM, interrupt)


def http_call(port: int, method: str, path: str, body: Optional[str] = None,
              content_type: Optional[str] = None) -> tuple[int, bytes]:
    """One HTTP request to `port` of this machine: (status, body)."""
    conn = http.client.HTTPConnection(LOCALHOST, port, timeout=5)
    try:
        conn.request(method, path, body=body,
                     headers={"Content-Type": content_type} if content_type else {})
        reply = conn.getresponse()
        return reply.status, reply.read()
    finally:
        conn.close()


def answers_http_ping(port: int) -> Callable[[], bool]:
    """A readiness check: the HTTP edge on `port` answers GET /ping with PONG."""
    return lambda: http_call(port, "GET", "/ping") == (200, b"PONG")


def start_router(workdir: str, flags: Sequence[str], cpus: Optional[set[int]] = None,
                 timeout: float = START_TIMEOUT_S) -> tuple[Child, int, int]:
    """run_router.py on free ports: (child, native client port, HTTP port) once both of its
    fronts answer a ping (the ZeroMQ one answers before the HTTP edge has started)."""
    zmq_port, http_port = free_port(), free_port()
    child = launch("router", [sys.executable, os.path.join(REPO_ROOT, "run_router.py"),
                              "--zmq-port", str(zmq_port), "-p", str(http_port), *flags],
                   workdir, cpus=cpus)
    http_ready, zmq_ready = answers_http_ping(http_port), answers_ping(zmq_port)
    wait_ready(child, lambda: http_ready() and zmq_ready(), timeout)
    return child, zmq_port, http_port


def reap(procs: Iterable, timeout: float = 5.0) -> None:
    """Join spawned processes within `timeout` s in all, then kill those still running."""
    started = [proc for proc in procs if proc.pid is not None]
    deadline = time.monotonic() + timeout
    for proc in started:
        proc.join(max(0.0, deadline - time.monotonic()))
    for proc in started:
        if proc.is_alive():
            proc.kill()
            proc.join(5)


# -- CPUs ------------------------------------------------------------------------------------

def split_cpus() -> Optional[tuple[set[int], set[int]]]:
    """(the last CPU, the others) of those this process may use; None with fewer than 2.

    Servers on one, clients on the others, as client and server would be apart in a
    deployment. It also steadies the figures: on a small VM a loopback round trip costs about
    30 us when both ends share a CPU and about 110 us when the other CPU must be woken, and
    unpinned, which one a request gets is the kernel's draw."""
    cpus = sorted(os.sched_getaffinity(0))
    return ({cpus[-1]}, set(cpus[:-1])) if len(cpus) >= 2 else None


def cpu_list(cpus: Iterable[int]) -> str:
    return ",".join(map(str, sorted(cpus)))


@contextlib.contextmanager
def on_cpus(cpus: Optional[set[int]]) -> Iterator[None]:
    """Within it, this thread and every process it starts run on `cpus` (None: unchanged).
    Only this thread: threads started earlier (ZeroMQ's I/O threads) keep their CPUs."""
    if not cpus:
        yield
        return
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, cpus)
    try:
        yield
    finally:
        os.sched_setaffinity(0, before)


def set_tree_affinity(pid: int, cpus: set[int]) -> None:
    """Move every thread of process `pid` and of its descendants (a node's flush and merge
    workers) to `cpus`."""
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:  # gone
        return
    for tid in tids:
        try:
            os.sched_setaffinity(int(tid), cpus)
        except OSError:
            pass
    for child in child_pids(pid):
        set_tree_affinity(child, cpus)


def child_pids(pid: int) -> list[int]:
    """The processes whose parent is `pid`."""
    found = []
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return found
    for tid in tids:
        try:
            with open(f"/proc/{pid}/task/{tid}/children") as file:
                found += [int(child) for child in file.read().split()]
        except OSError:
            pass
    return found


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of process `pid` so far (all its threads, not its children);
    nan once it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as file:
            fields = file.read().rpartition(")")[2].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return math.nan


# -- figures ---------------------------------------------------------------------------------

def percentiles(values: Iterable[float], *quantiles: float) -> list[float]:
    """Nearest-rank percentiles of `values`, one per quantile (0 < q <= 1); nan for no values."""
    ordered = sorted(values)
    if not ordered:
        return [math.nan] * len(quantiles)
    return [ordered[max(0, math.ceil(q * len(ordered)) - 1)] for q in quantiles]


def verdict(passed: bool) -> str:
    return "PASS" if passed else "MISS"


def print_table(rows: Sequence[Sequence[str]], align: str = "", indent: str = "") -> None:
    """Rows of cells (the header rows first), each column as wide as its widest cell; column
    i is aligned by align[i] ('<' or '>'), by default the first left and the others right."""
    columns = max(len(row) for row in rows)
    rows = [list(row) + [""] * (columns - len(row)) for row in rows]
    align = align or "<" + ">" * (columns - 1)
    widths = [max(len(row[i]) for row in rows) for i in range(columns)]
    for row in rows:
        cells = (f"{cell:{align[i]}{widths[i]}}" for i, cell in enumerate(row))
        print((indent + "  ".join(cells)).rstrip())
