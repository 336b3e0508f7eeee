"""Taking a backup: a node's replication snapshot, streamed over its request socket to a file.

The node serves the snapshot as it does to a slave that needs a full sync (`sync` with no
history, then `chunk` until done): every live item as of one sequence number, in key order,
while writes go on. Those are replication operations, so a keyed cluster wants the member key.
The file is written beside its final name and renamed there once complete and fsynced, so a
backup that fails leaves no file that looks whole.
"""
from __future__ import annotations

import logging
import os
import time
from typing import Callable, Optional

from yaddb.backup.format import end_frame, header_frame, items_frame
from yaddb.durable import fsync_dir, remove_if_present
from yaddb.errors import BadBackup, NotMaster
from yaddb.placement import parse_address
from yaddb.transport.client_conn import Connection
from yaddb.transport.sockets import Secure

__all__ = ["take_backup", "CHUNK_BYTES"]

log = logging.getLogger(__name__)

CHUNK_BYTES = 1 << 20   # asked per chunk, as a slave does
PARTIAL_SUFFIX = ".partial"

Progress = Callable[[int, Optional[int]], None]  # (items so far, estimated total or None)


def take_backup(node: str, path: str, *, timeout: float = 10.0, secure: Secure = None,
                progress: Optional[Progress] = None, note: Optional[dict] = None) -> dict:
    """Stream the master at `node` (host:port) into the file `path`; returns the header
    written (with "seq", the sequence number the backup is as of) and "items", the count."""
    parse_address(node)  # BadAddress says what is wrong
    if os.path.exists(path):
        raise BadBackup(f"{path} exists; a backup never replaces a file: name another")
    conn = Connection(f"tcp://{node}", timeout, secure=secure)
    partial = path + PARTIAL_SUFFIX
    try:
        estimate = conn.call("stats", []).get("keys_estimate")
        try:
            answer = conn.call("sync", [None, 0, CHUNK_BYTES])
        except NotMaster:
            raise NotMaster(f"{node} is a slave; back up its partition's master (`yaddb backup` "
                            f"without --node finds every master through the router)") from None
        header = {"seq": answer["seq"], "history": answer["history"], "node": node,
                  "taken_at": time.time(), **(note or {})}
        count = 0
        with open(partial, "wb") as file:
            file.write(header_frame(header))
            chunk = answer if answer["mode"] == "snapshot" else {"items": [], "done": True}
            while True:
                if chunk["items"]:
                    file.write(items_frame(chunk["items"]))
                    count += len(chunk["items"])
                    if progress is not None:
                        progress(count, estimate)
                if chunk["done"]:
                    break
                chunk = conn.call("chunk", [answer["cursor"]])
            file.write(end_frame(count))
            file.flush()
            os.fsync(file.fileno())
        os.replace(partial, path)
        fsync_dir(os.path.dirname(os.path.abspath(path)))
    except BaseException:
        remove_if_present(partial)
        raise
    finally:
        conn.close()
    log.info("backed up %d items of %s as of sequence %d into %s", count, node, header["seq"], path)
    return {**header, "items": count}
