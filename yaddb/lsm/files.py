"""Names of the files in a data directory, and the crash-safe ways to write them."""
from __future__ import annotations

import errno
import fcntl
import os
import re

from yaddb.errors import DataDirLocked

MANIFEST = "MANIFEST"
LOCK = "LOCK"
_NUMBERED = re.compile(r"^(wal|seg)-(\d{6,})\.(log|sst)$")


def wal_name(number: int) -> str:
    return f"wal-{number:06d}.log"


def segment_name(number: int) -> str:
    return f"seg-{number:06d}.sst"


def parse_name(name: str) -> tuple[str, int] | None:
    """('wal'|'seg', number) for a numbered file of ours, else None."""
    match = _NUMBERED.match(name)
    return (match.group(1), int(match.group(2))) if match else None


class DirLock:
    """An exclusive flock on the data directory's LOCK file, held while the engine is open."""

    def __init__(self, directory: str) -> None:
        self._path = os.path.join(directory, LOCK)
        self._fd = os.open(self._path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(self._fd)
            if exc.errno in (errno.EAGAIN, errno.EACCES):
                raise DataDirLocked(
                    f"data directory {directory} is in use by another process; stop that "
                    f"process or choose another --data-dir"
                ) from None
            raise
        os.ftruncate(self._fd, 0)
        os.write(self._fd, f"{os.getpid()}\n".encode())

    def release(self) -> None:
        if self._fd >= 0:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = -1
