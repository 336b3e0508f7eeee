"""Sync w=1 sets against a master with one slave, all from the checkout at TREE: a whole-process
workload for comparing two commits (the cost of a change on the default write path).

    git worktree add ../before <commit>
    python3 bench/sync_sets_tree.py . 20000          # prints sets/s; exits when done
    python3 bench/sync_sets_tree.py ../before 20000

Run the two alternately several times (A B A B ...) and compare medians: the machine's speed
drifts, so only pairs taken close together say much. It imports the client from TREE too, so
each side is measured as it was, and stands alone (bench/common.py is this checkout's).
"""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def node(tree: str, data_dir: str, port: int, *role: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, os.path.join(tree, "run_node.py"), "-p", str(port),
                             "--pub-port", str(free_port()), "--data-dir", data_dir,
                             "--log-level", "WARNING", *role],
                            env={**os.environ, "PYTHONPATH": tree})


def main() -> int:
    tree = os.path.abspath(sys.argv[1])
    count = int(sys.argv[2]) if len(sys.argv) > 2 else 20000
    sys.path.insert(0, tree)
    from yaddb import Client  # the tree's own client

    workdir = tempfile.mkdtemp(prefix="yaddb-sync-sets-")
    master_port = free_port()
    nodes = [node(tree, os.path.join(workdir, "master"), master_port, "master"),
             node(tree, os.path.join(workdir, "slave"), free_port(), "slave", "--master-host",
                  "127.0.0.1", "--master-port", str(master_port))]
    try:
        with Client(f"tcp://127.0.0.1:{master_port}", timeout=10, direct=False) as client:
            deadline = time.monotonic() + 30
            while not _answers(client):
                if time.monotonic() > deadline:
                    raise SystemExit("the master did not answer within 30 s")
                time.sleep(0.05)
            value = b"x" * 100
            start = time.monotonic()
            for n in range(count):
                client.set(b"key%d" % n, value)
            print(f"{count / (time.monotonic() - start):.0f} sets/s")
    finally:
        for process in nodes:
            process.terminate()
        for process in nodes:
            process.wait(30)
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


def _answers(client) -> bool:
    try:
        return client.ping()
    except Exception:  # not up yet
        return False


if __name__ == "__main__":
    sys.exit(main())
