"""The process table as tests see it: which of our processes run, read from /proc.

Every process this test session starts carries SESSION_VARIABLE in its environment, and so do
their children (a router's nodes, a node's workers): it is set in this process's environment
at import, and our processes pass their environment on. So processes of this session are told
apart from those of other sessions on the same machine, also after their parent died.
"""
from __future__ import annotations

import os
import uuid
from typing import Iterable, NamedTuple, Optional

SESSION_VARIABLE = "TEST_YADDB_SESSION"  # not YADDB_*: the embedded cluster drops those
os.environ[SESSION_VARIABLE] = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
SESSION = os.environ[SESSION_VARIABLE]
# the embedded cluster starts its nodes as `python -m yaddb.node`; installed commands are
# yaddb-node and yaddb-router
OURS = ("run_node.py", "run_router.py", "-m yaddb.node", "yaddb.lsm.workerd", "yaddb-node",
        "yaddb-router")


class Proc(NamedTuple):
    """One process: pid plus its start time, so a reused pid is never taken for it."""
    pid: int
    start: int


def session_tag(tag: str) -> str:
    """The SESSION_VARIABLE value for a process (and its descendants) tagged `tag`."""
    return f"{SESSION}:{tag}"


def _stat(pid: int) -> Optional[list[str]]:
    """Fields of /proc/PID/stat after the command name (state first), or None if gone."""
    try:
        with open(f"/proc/{pid}/stat") as file:
            stat = file.read()
    except OSError:
        return None
    return stat[stat.rindex(")") + 2:].split()


def cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as file:
            return file.read().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return ""


def _environ_value(pid: int, name: str) -> Optional[str]:
    try:
        with open(f"/proc/{pid}/environ", "rb") as file:
            entries = file.read().split(b"\0")
    except OSError:
        return None
    prefix = name.encode() + b"="
    for entry in entries:
        if entry.startswith(prefix):
            return entry[len(prefix):].decode(errors="replace")
    return None


def proc(pid: int) -> Optional[Proc]:
    """The live (not zombie) process `pid`, or None."""
    fields = _stat(pid)
    if fields is None or fields[0] in ("Z", "X"):
        return None
    return Proc(pid, int(fields[19]))


def alive(process: Proc) -> bool:
    return proc(process.pid) == process


def parent_of(pid: int) -> Optional[int]:
    fields = _stat(pid)
    return None if fields is None else int(fields[1])


def group_of(pid: int) -> Optional[int]:
    fields = _stat(pid)
    return None if fields is None else int(fields[2])


def all_pids() -> list[int]:
    return [int(name) for name in os.listdir("/proc") if name.isdigit()]


def children_of(pid: int) -> list[int]:
    return [child for child in all_pids() if parent_of(child) == pid and proc(child)]


def descendants(pid: int) -> set[Proc]:
    """Every live process below `pid` (children, their children, ...)."""
    parents: dict[int, list[int]] = {}
    for child in all_pids():
        parent = parent_of(child)
        if parent is not None:
            parents.setdefault(parent, []).append(child)
    found, todo = set(), [pid]
    while todo:
        for child in parents.get(todo.pop(), []):
            process = proc(child)
            if process is not None and process not in found:
                found.add(process)
                todo.append(child)
    return found


def ours(tag: Optional[str] = None, patterns: Iterable[str] = OURS) -> dict[Proc, str]:
    """Live processes of this session whose command line holds one of `patterns`; with `tag`,
    only those started under it (and their descendants): Proc -> command line."""
    found = {}
    for pid in all_pids():
        line = cmdline(pid)
        if not any(pattern in line for pattern in patterns):
            continue
        marker = _environ_value(pid, SESSION_VARIABLE)
        if marker is None:
            continue
        if tag is None:
            if marker != SESSION and not marker.startswith(SESSION + ":"):
                continue
        elif marker != session_tag(tag):
            continue
        process = proc(pid)
        if process is not None:
            found[process] = line
    return found


def kill(processes: Iterable[Proc], signum: int = 9) -> None:
    """Signal each process that is still the one recorded (a reused pid is left alone)."""
    for process in processes:
        if alive(process):
            try:
                os.kill(process.pid, signum)
            except ProcessLookupError:
                pass
