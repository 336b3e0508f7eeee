"""Progress bars on a terminal, and none elsewhere: `yaddb restore` and `yaddb bench`, and a
slave's full sync in its node's output, each run once on a pseudo-terminal and once on pipes."""
import fcntl
import os
import pty
import select
import signal
import struct
import subprocess
import sys
import termios
import time

from tests.helpers import REPO_ROOT, child_env, wait_for
from yaddb.backup.format import end_frame, header_frame, items_frame
from yaddb.client import Client
from yaddb.supervisor import free_port
from yaddb.transport.client_conn import Connection

BAR = b"%|"  # tqdm's bar, between the percentage and the blocks


class Terminal:
    """A command whose standard output and error are a pseudo-terminal."""

    def __init__(self, argv):
        self.fd, child_side = pty.openpty()
        # A new pseudo-terminal is 0 columns wide, where tqdm draws nothing: give it 80.
        fcntl.ioctl(child_side, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 80, 0, 0))
        self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=child_side,
                                     stderr=child_side, cwd=REPO_ROOT, env=child_env(),
                                     start_new_session=True)
        os.close(child_side)
        self.output = b""

    def read(self, until=None, timeout=60.0):
        """Read what it wrote, until `until(output)` holds or it closed the terminal."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and not (until and until(self.output)):
            if select.select([self.fd], [], [], 0.2)[0]:
                try:
                    data = os.read(self.fd, 65536)
                except OSError:  # EIO: every writer closed the terminal
                    break
                if not data:
                    break
                self.output += data
        return self.output

    def close(self):
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(30)
        os.close(self.fd)


def on_terminal(*argv):
    terminal = Terminal([sys.executable, "-m", "yaddb", *argv])
    try:
        output = terminal.read()
        assert terminal.proc.wait(60) == 0, output
        return output
    finally:
        terminal.close()


def on_pipes(*argv):
    result = subprocess.run([sys.executable, "-m", "yaddb", *argv], cwd=REPO_ROOT,
                            env=child_env(), capture_output=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return result.stderr


def test_restore_and_bench_show_progress_on_a_terminal_only(tmp_path, processes):
    backup = tmp_path / "made.yaddb-backup"
    items = [[b"key%06d" % n, b"v" * 200] for n in range(40_000)]
    backup.write_bytes(header_frame({"seq": len(items), "history": "h", "node": "made"})
                       + b"".join(items_frame(items[i:i + 1000]) for i in range(0, len(items), 1000))
                       + end_frame(len(items)))
    shown = on_terminal("restore", str(backup), str(tmp_path / "on-terminal"))
    assert BAR in shown and b"restore made.yaddb-backup" in shown
    assert on_pipes("restore", str(backup), str(tmp_path / "on-pipes")) == b""

    node = processes.node(tmp_path / "node", "--fsync", "never").wait_ready()
    bench = ("-e", node.endpoint, "bench", "-c", "2", "-n", "3000", "-t", "set")
    shown = on_terminal(*bench)
    assert BAR in shown and b"bench set" in shown and b"SET:" in shown
    assert on_pipes(*bench) == b""


def test_a_slaves_full_sync_shows_progress_on_its_terminal(tmp_path, processes):
    master = processes.node(tmp_path / "master", "--fsync", "never").wait_ready()
    with Client(master.endpoint, direct=False) as client:
        for start in range(0, 60_000, 2_000):
            client.mset({b"key%06d" % n: b"v" * 100 for n in range(start, start + 2_000)})
    port = free_port()
    slave = Terminal([sys.executable, "run_node.py", "-p", str(port), "--pub-port",
                      str(free_port()), "--data-dir", str(tmp_path / "slave"), "--fsync", "never",
                      "slave", "--master-host", "127.0.0.1", "--master-port", str(master.port)])
    try:
        shown = slave.read(until=lambda output: BAR in output)
        assert BAR in shown and f"full sync from {master.address}".encode() in shown, shown

        def ready():
            conn = Connection(f"tcp://127.0.0.1:{port}", 2.0)
            try:
                return conn.call("stats", [])["replication"]["ready"]
            finally:
                conn.close()
        wait_for(ready, "the slave to finish its full sync")
    finally:
        slave.close()
    assert slave.proc.returncode == 0
    # On a file, as in every other test, the log says it without a bar.
    logged = processes.node(tmp_path / "slave-2", "--fsync", "never", role=(
        "slave", "--master-host", "127.0.0.1", "--master-port", str(master.port))).wait_ready()
    wait_for(lambda: "full sync from" in logged.log(), "the second slave's full sync")
    assert BAR.decode() not in logged.log()
