"""Restoring a backup: a new data directory holding the backup's items, for a node to start on.

The items go into an engine in a temporary directory beside the target, which takes the
target's name only once every frame checked out and the data is on disk: a damaged or
truncated backup leaves nothing behind, and an existing data directory is never touched.
The restored node starts with a history of its own (as a master, or as a slave that first
syncs from its master); the backup's sequence number stays in the backup's header.
"""
from __future__ import annotations

import logging
import os
import shutil
import tempfile
from typing import Callable, Optional

from yaddb.backup.format import MAX_FRAME_BYTES, BackupReader
from yaddb.durable import fsync_dir
from yaddb.errors import BadBackup
from yaddb.lsm import Engine

__all__ = ["restore_backup"]

log = logging.getLogger(__name__)

Progress = Callable[[int, int], None]  # (bytes read so far, the file's size)


def restore_backup(path: str, data_dir: str, progress: Optional[Progress] = None) -> dict:
    """Make `data_dir` (absent or empty) from the backup at `path`; returns its header with
    "items", the count restored."""
    if os.path.isdir(data_dir) and os.listdir(data_dir):
        raise BadBackup(f"{data_dir} is not empty; restore makes a new data directory and never "
                        f"writes over one: name a directory that does not exist yet")
    if os.path.exists(data_dir) and not os.path.isdir(data_dir):
        raise BadBackup(f"{data_dir} is a file; name a directory that does not exist yet")
    parent = os.path.dirname(os.path.abspath(data_dir))
    os.makedirs(parent, exist_ok=True)
    work = tempfile.mkdtemp(prefix=f".{os.path.basename(os.path.abspath(data_dir))}.restoring-",
                            dir=parent)
    try:
        with _open(path) as file:
            size = os.fstat(file.fileno()).st_size
            reader = BackupReader(file, path)
            count = 0
            # Values were a node's, within its own limit: only the format's bound applies here.
            with Engine(work, fsync="never", compaction="thread",
                        max_value_bytes=MAX_FRAME_BYTES) as engine:
                for chunk in reader.chunks():
                    engine.write_batch(chunk, sync=False)
                    count += len(chunk)
                    if progress is not None:
                        progress(reader.offset, size)
                engine.flush()
                engine.sync(force=True)
        if os.path.isdir(data_dir):
            os.rmdir(data_dir)  # empty, checked above
        os.rename(work, data_dir)
        fsync_dir(parent)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    log.info("restored %d items from %s into %s", count, path, data_dir)
    return {**reader.header, "items": count}


def _open(path: str):
    try:
        return open(path, "rb")
    except OSError as exc:
        raise BadBackup(f"cannot read the backup {path}: {exc.strerror}") from None
