"""Opening a data directory: the manifest, its segments, then the logs replayed into a memtable."""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass

from yaddb.durable import TMP_SUFFIX
from yaddb.errors import CorruptionError, StorageError
from yaddb.lsm import files, manifest as manifests
from yaddb.lsm.memtable import Memtable
from yaddb.lsm.sstable import Segment
from yaddb.lsm.wal import recover

log = logging.getLogger(__name__)


@dataclass
class Recovered:
    manifest: manifests.Manifest
    segments: tuple[Segment, ...]   # newest first
    memtable: Memtable              # every write still only in the logs
    seq: int                        # the highest sequence number found
    next_file: int


def recover_directory(path: str) -> Recovered:
    """Read what a (possibly crashed) engine left in `path`; the caller holds its lock."""
    names = os.listdir(path)
    numbered = sorted(parsed for parsed in map(files.parse_name, names) if parsed)
    # Temporary files count for numbering too, so no new file can take a name that a worker
    # process of a killed engine might still rename into place.
    numbers = [parsed[1] for parsed in (files.parse_name(name.removesuffix(TMP_SUFFIX))
                                        for name in names) if parsed]
    manifest = manifests.load(path)
    if manifest is None:
        if numbered:
            raise StorageError(
                f"{path} holds log or segment files but no {files.MANIFEST}; it was not written "
                f"by this engine or lost its manifest. Move the files aside to start empty.")
        manifest = manifests.Manifest()
        manifests.store(path, manifest)
    segments = _open_segments(path, manifest.segments)
    try:
        _remove_leftovers(path, names, manifest)
        memtable = Memtable()
        seq = max([manifest.last_seq] + [s.max_seq for s in segments])
        for kind, number in numbered:
            if kind == "wal" and number >= manifest.log_number:
                seq = max(seq, _replay(os.path.join(path, files.wal_name(number)), number, memtable))
    except BaseException:
        for segment in segments:
            segment.close()
        raise
    return Recovered(manifest, segments, memtable, seq,
                     max([manifest.next_file] + [number + 1 for number in numbers]))


def _open_segments(path: str, numbers: tuple[int, ...]) -> tuple[Segment, ...]:
    opened: list[Segment] = []
    try:
        for number in numbers:
            segment_path = os.path.join(path, files.segment_name(number))
            if not os.path.exists(segment_path):
                raise CorruptionError(segment_path, None, f"{files.MANIFEST} lists it but it is missing")
            opened.append(Segment(segment_path, number))
    except BaseException:
        for segment in opened:
            segment.close()
        raise
    return tuple(opened)


def _remove_leftovers(path: str, names: list[str], manifest: manifests.Manifest) -> None:
    """Files of an unfinished flush or compaction, and logs already in segments."""
    live = set(manifest.segments)
    for name in names:
        parsed = files.parse_name(name)
        if name.endswith(TMP_SUFFIX) or (parsed is not None and (
                (parsed[0] == "seg" and parsed[1] not in live)
                or (parsed[0] == "wal" and parsed[1] < manifest.log_number))):
            log.info("%s: removing %s, left over from an unfinished flush or compaction", path, name)
            os.remove(os.path.join(path, name))


def _replay(wal_path: str, number: int, memtable: Memtable) -> int:
    """Apply one log to the memtable; returns its last sequence number (0 if it was empty)."""
    batches = recover(wal_path)
    if not batches:
        os.remove(wal_path)  # nothing to protect; keeps empty logs from piling up
        return 0
    for batch in batches:
        for offset, (key, value) in enumerate(batch.entries):
            memtable.put(key, value, batch.first_seq + offset)
    memtable.wal_numbers.append(number)
    return batches[-1].last_seq
