"""Shared pieces of the corruption tests (test_corrupt_*.py, test_wal_scan.py): crash images
taken from a real engine, damage applied to them, and the checks every damaged directory
faces. The engine either recovers exactly what was whole, or refuses with a CorruptionError
naming the damaged file. It never serves wrong data.

The crash images are taken from a real engine: its directory is copied while it is open, which
is what a crash at that moment would leave (Engine.close() would flush the memtable and delete
the log, leaving nothing to replay).
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import pytest

from yaddb.errors import CorruptionError, StorageError
from yaddb.lsm import Engine, files, wal_format

Image = dict[str, bytes]  # file name -> contents


# ---- helpers -----------------------------------------------------------------------------------

def materialize(image: Image, directory: Path, **replaced: bytes) -> Path:
    """Write the image into a fresh directory; `replaced` maps file names to other contents."""
    directory.mkdir()
    for name, data in {**image, **replaced}.items():
        (directory / name).write_bytes(data)
    return directory


def flipped(data: bytes, position: int, mask: int = 0xFF) -> bytes:
    return data[:position] + bytes([data[position] ^ mask]) + data[position + 1:]


def open_db(directory: Path, **options) -> Engine:
    return Engine(str(directory), **{"compaction": "manual", **options})


def live_state(engine: Engine) -> dict:
    return dict(engine.items())


def assert_open_refused(directory: Path, damaged: Path, offset: Optional[int] = None,
                        error=CorruptionError) -> StorageError:
    """Opening fails with `error` naming `damaged`, touches no file, and releases the lock."""
    before = {p.name: p.read_bytes() for p in directory.iterdir() if p.name != files.LOCK}
    with pytest.raises(error) as info:
        open_db(directory).close()
    if error is CorruptionError:
        assert info.value.path == str(damaged), info.value
        if offset is not None:
            assert info.value.offset == offset, info.value
    after = {p.name: p.read_bytes() for p in directory.iterdir() if p.name != files.LOCK}
    assert after == before, "a refused open changed the files it refused"
    files.DirLock(str(directory)).release()  # raises DataDirLocked if the failed open kept it
    return info.value


def sequence_of(batches) -> int:
    return sum(len(batch) for batch in batches)


# ---- a log that needs replay -------------------------------------------------------------------

BASE = {b"seg-%02d" % i: b"segment value %d" % i for i in range(20)}
RECORDS: list[list[tuple[bytes, Optional[bytes]]]] = [
    [(b"new-a", b"first")],
    [(b"seg-00", b"overwritten")],
    [(b"seg-01", None)],
    [(b"new-b", b"x" * 300), (b"seg-02", None), (b"new-a", b"second")],
    [(b"empty", b"")],
    [(b"seg-03", None)],
    [(b"new-c", bytes(range(256)))],
    [(b"seg-04", b"4 again"), (b"seg-05", None), (b"seg-05", b"5 again")],
    [(b"new-a", None)],
    [(b"seg-01", b"back again")],
    [(b"seg-06", b"last")],  # dropping it brings back the segment's value
]
MIDDLE = 5  # a record with whole records after it


def expected_after(count: int) -> dict:
    """The live items after the segment and the first `count` log records."""
    model: dict[bytes, Optional[bytes]] = dict(BASE)
    for record in RECORDS[:count]:
        for key, value in record:
            model[key] = value
    return {key: value for key, value in model.items() if value is not None}


def sequence_after(count: int) -> int:
    return len(BASE) + sequence_of(RECORDS[:count])


class WalImage:
    def __init__(self, image: Image, wal_name: str) -> None:
        # The log as written ends in zeros (wal.py fills it ahead of its records); the tests
        # cut and damage its records, so the image holds those alone.
        written = image[wal_name]
        self.wal = written[:wal_format.scan(written).valid_bytes]
        assert written[len(self.wal):] == bytes(len(written) - len(self.wal))
        self.image = {**image, wal_name: self.wal}
        self.wal_name = wal_name
        self.bounds = [0]  # record boundaries: record i is bytes bounds[i]..bounds[i + 1]
        while self.bounds[-1] < len(self.wal):
            _crc, length, _kind, _payload_crc = wal_format.HEADER.unpack_from(self.wal, self.bounds[-1])
            self.bounds.append(self.bounds[-1] + wal_format.HEADER.size + length)

    def with_log(self, directory: Path, log: bytes) -> Path:
        return materialize(self.image, directory, **{self.wal_name: log})


def assert_recovers(directory: Path, count: int) -> None:
    with open_db(directory) as engine:
        assert live_state(engine) == expected_after(count)
        assert engine.sequence == sequence_after(count)
        for key in expected_after(len(RECORDS)).keys() | BASE.keys():
            assert engine.get(key) == expected_after(count).get(key)


# ---- log records as bytes: for wal_format.scan, and as a value that looks like a log ----------

SCAN_RECORDS = [
    wal_format.encode_single(1, b"a", b"one"),
    wal_format.encode_batch(2, [(b"b", b"two"), (b"a", None), (b"c", b"")]),
    wal_format.encode_single(5, b"b", None),
    wal_format.encode_single(6, b"d", b"x" * 100),
]
SCAN_BOUNDS = [sum(len(r) for r in SCAN_RECORDS[:i]) for i in range(len(SCAN_RECORDS) + 1)]
SCAN_ENTRIES = [[(b"a", b"one")], [(b"b", b"two"), (b"a", None), (b"c", b"")], [(b"b", None)],
                [(b"d", b"x" * 100)]]
LOG = b"".join(SCAN_RECORDS)


def entries(scan: wal_format.Scan) -> list:
    return [batch.entries for batch in scan.batches]

