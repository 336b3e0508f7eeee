"""The parent's side of a storage worker process (yaddb.lsm.workerd is the child's).

Flushes and merges run in worker processes so their CPU work does not hold the engine's GIL:
a background thread that computes steals the GIL from the writers at every system call they
make. The parent starts
`python -m yaddb.lsm.workerd` and sends it one request at a time over stdin (u32 length +
msgpack); the worker answers on stdout the same way.
"""
from __future__ import annotations

import os
import struct
import subprocess
import sys
import threading
from typing import BinaryIO, Optional

import msgpack

from yaddb.errors import StorageError
from yaddb.lsm.sstable import SegmentInfo

_LENGTH = struct.Struct("<I")
_PACKAGE_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def send(stream: BinaryIO, message: object) -> None:
    body = msgpack.packb(message, use_bin_type=True)
    stream.write(_LENGTH.pack(len(body)) + body)
    stream.flush()


def receive(stream: BinaryIO) -> Optional[object]:
    head = stream.read(_LENGTH.size)
    if len(head) < _LENGTH.size:
        return None
    (length,) = _LENGTH.unpack(head)
    body = stream.read(length)
    return None if len(body) < length else msgpack.unpackb(body)


class WorkerProcess:
    """Parent side: one long-lived worker, started on first use and again if it died."""

    def __init__(self) -> None:
        self._proc: Optional[subprocess.Popen] = None
        self._lock = threading.Lock()

    def merge(self, paths: list[str], output: str, drop_tombstones: bool, max_seq: int,
              block_bytes: int, bits_per_key: float) -> SegmentInfo:
        """compaction.compact_files, run in the worker."""
        return SegmentInfo(*self._call(output, ["merge", paths, output, drop_tombstones, max_seq,
                                                block_bytes, bits_per_key]))

    def write(self, output: str, keys: list[bytes], values: list[Optional[bytes]], max_seq: int,
              block_bytes: int, bits_per_key: float) -> SegmentInfo:
        """sstable.write_segment of sorted keys and values, run in the worker."""
        return SegmentInfo(*self._call(output, ["write", output, keys, values, max_seq,
                                                block_bytes, bits_per_key]))

    def key_filter(self, paths: list[str], bits_per_key: float, min_capacity: int) -> bytes:
        """key_filter.build, run in the worker."""
        return self._call("a key filter", ["keyfilter", paths, bits_per_key, min_capacity])

    def _call(self, what: str, request: list) -> object:
        with self._lock:
            if self._proc is None or self._proc.poll() is not None:
                env = dict(os.environ)
                env["PYTHONPATH"] = os.pathsep.join(filter(None, [_PACKAGE_ROOT, env.get("PYTHONPATH")]))
                self._proc = subprocess.Popen([sys.executable, "-m", "yaddb.lsm.workerd"],
                                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env)
            try:
                send(self._proc.stdin, request)
                reply = receive(self._proc.stdout)
            except OSError:
                reply = None
        if reply is None:
            raise StorageError(f"the storage worker process exited (code {self._proc.poll()}) "
                               f"while writing {what}")
        ok, payload = reply
        if not ok:
            raise StorageError(f"writing {what} failed in the worker process: {payload}")
        return payload

    def close(self) -> None:
        with self._lock:
            if self._proc is not None:
                self._proc.stdin.close()
                self._proc.wait()
                self._proc.stdout.close()
                self._proc = None
