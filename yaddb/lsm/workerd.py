"""A storage worker process: `python -m yaddb.lsm.workerd`, started by yaddb.lsm.worker.

It exits at once when its stdin closes, so a killed parent never leaves it writing into the
data directory. It ignores SIGINT and SIGTERM: they reach its whole process group (Ctrl-C in a
terminal, a supervisor stopping the node), and the node, stopping cleanly, still needs it to
finish its last flush; the node closes its stdin when done.
"""
from __future__ import annotations

import os
import signal
import sys
import threading

from yaddb.lsm import key_filter
from yaddb.lsm.compaction import compact_files
from yaddb.lsm.sstable import write_segment
from yaddb.lsm.worker import receive, send


def _run(request: list) -> object:
    kind, *args = request
    if kind == "merge":
        info = compact_files(*args)
        return [info.path, info.entries, info.tombstones, info.max_seq, info.size]
    if kind == "write":  # the parent also wants the key hashes, for its key filter
        output, keys, values, max_seq, block_bytes, bits_per_key = args
        info = write_segment(output, zip(keys, values), max_seq, block_bytes, bits_per_key)
        return [info.path, info.entries, info.tombstones, info.max_seq, info.size, info.key_hashes]
    if kind == "keyfilter":
        return key_filter.build(*args)
    raise ValueError(f"unknown request {kind!r}")


def serve() -> None:
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, signal.SIG_IGN)
    requests: list = []
    ready = threading.Condition()

    def read_requests() -> None:
        while True:
            request = receive(sys.stdin.buffer)
            if request is None:
                os._exit(0)  # parent gone or done: stop even mid-merge; the temp file is orphaned
            with ready:
                requests.append(request)
                ready.notify()

    threading.Thread(target=read_requests, daemon=True).start()
    while True:
        with ready:
            ready.wait_for(lambda: requests)
            request = requests.pop(0)
        try:
            reply = [True, _run(request)]
        except Exception as exc:  # report to the parent, which logs it and keeps serving
            reply = [False, f"{type(exc).__name__}: {exc}"]
        send(sys.stdout.buffer, reply)


if __name__ == "__main__":
    serve()
