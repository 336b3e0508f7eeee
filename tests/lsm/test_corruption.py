"""Damaged files: the engine either recovers exactly what was whole, or refuses with a
CorruptionError naming the damaged file. It never serves wrong data.

The crash images are taken from a real engine: its directory is copied while it is open, which
is what a crash at that moment would leave (Engine.close() would flush the memtable and delete
the log, leaving nothing to replay).
"""
from __future__ import annotations

import os
import random
import shutil
import struct
import time
import zlib
from pathlib import Path
from typing import Optional

import msgpack
import pytest

from yaddb.errors import CorruptionError, StorageError
from yaddb.lsm import Engine, files, wal_format
from yaddb.lsm import sstable_format as fmt
from yaddb.lsm.manifest import Manifest
from yaddb.lsm.sstable import Segment

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


def wait_for(condition, what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.005)


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
        self.image = image
        self.wal_name = wal_name
        self.wal = image[wal_name]
        self.bounds = [0]  # record boundaries: record i is bytes bounds[i]..bounds[i + 1]
        while self.bounds[-1] < len(self.wal):
            _crc, length, _kind, _payload_crc = wal_format.HEADER.unpack_from(self.wal, self.bounds[-1])
            self.bounds.append(self.bounds[-1] + wal_format.HEADER.size + length)

    def with_log(self, directory: Path, log: bytes) -> Path:
        return materialize(self.image, directory, **{self.wal_name: log})


@pytest.fixture(scope="module")
def wal_image(tmp_path_factory) -> WalImage:
    source = tmp_path_factory.mktemp("wal-source")
    engine = Engine(str(source), fsync="always", compaction="manual")
    try:
        engine.write_batch(list(BASE.items()))
        engine.flush()
        # The flushed log is deleted just after the flush is installed.
        wait_for(lambda: len([n for n in os.listdir(source) if n.startswith("wal-")]) == 1,
                 "the flushed log to be deleted")
        for record in RECORDS:
            if len(record) > 1:
                engine.write_batch(record)
            elif record[0][1] is None:
                engine.delete(record[0][0])
            else:
                engine.put(*record[0])
        assert engine.sequence == sequence_after(len(RECORDS))
        image = {name: (source / name).read_bytes() for name in os.listdir(source)
                 if name != files.LOCK}
    finally:
        engine.close()
    (wal_name,) = [name for name in image if name.startswith("wal-")]
    made = WalImage(image, wal_name)
    scanned = wal_format.scan(made.wal)
    assert scanned.damage is None and [b.entries for b in scanned.batches] == RECORDS
    assert len(made.bounds) == len(RECORDS) + 1
    return made


def assert_recovers(directory: Path, count: int) -> None:
    with open_db(directory) as engine:
        assert live_state(engine) == expected_after(count)
        assert engine.sequence == sequence_after(count)
        for key in expected_after(len(RECORDS)).keys() | BASE.keys():
            assert engine.get(key) == expected_after(count).get(key)


def test_the_crash_image_replays_every_record(wal_image, tmp_path):
    directory = wal_image.with_log(tmp_path / "db", wal_image.wal)
    assert_recovers(directory, len(RECORDS))
    assert_recovers(directory, len(RECORDS))  # and again, from what the first open left


def test_a_log_cut_anywhere_keeps_exactly_the_whole_records_before_the_cut(wal_image, tmp_path):
    last = wal_image.bounds[-2]
    cuts = sorted(set(wal_image.bounds) | set(range(last, len(wal_image.wal)))
                  | set(range(wal_image.bounds[MIDDLE] + 1, wal_image.bounds[MIDDLE + 1], 7)))
    for cut in cuts:
        whole = max(i for i, bound in enumerate(wal_image.bounds) if bound <= cut)
        directory = wal_image.with_log(tmp_path / f"cut{cut}", wal_image.wal[:cut])
        log_path = directory / wal_image.wal_name
        with open_db(directory) as engine:
            assert live_state(engine) == expected_after(whole), f"cut at byte {cut}"
            assert engine.sequence == sequence_after(whole), f"cut at byte {cut}"
            if whole:  # the torn tail is cut off the file; an empty log is deleted
                assert log_path.read_bytes() == wal_image.wal[:wal_image.bounds[whole]]
        shutil.rmtree(directory)


@pytest.mark.parametrize("zeros", [1, 8, 9, 100, 4099])
def test_a_zero_filled_tail_keeps_every_record(wal_image, tmp_path, zeros):
    directory = wal_image.with_log(tmp_path / "db", wal_image.wal + bytes(zeros))
    assert_recovers(directory, len(RECORDS))


def test_a_garbage_tail_keeps_every_record(wal_image, tmp_path):
    garbage = random.Random(7).randbytes(300)
    directory = wal_image.with_log(tmp_path / "db", wal_image.wal + garbage)
    assert_recovers(directory, len(RECORDS))


def test_a_damaged_last_record_is_dropped_and_the_rest_kept(wal_image, tmp_path):
    start, end = wal_image.bounds[-2], wal_image.bounds[-1]
    # Every byte of the record (crc, length, kind, batch head, entry head, key, value), and
    # single-bit flips of the header.
    flips = [(position, 0xFF) for position in range(start, end)]
    flips += [(start + offset, 0x01) for offset in range(wal_format.HEADER.size)]
    for position, mask in flips:
        directory = wal_image.with_log(tmp_path / f"flip{position}-{mask}",
                                       flipped(wal_image.wal, position, mask))
        with open_db(directory) as engine:
            assert live_state(engine) == expected_after(len(RECORDS) - 1), (
                f"byte {position - start} of the last record flipped with {mask:#x}")
            assert engine.get(b"seg-06") == BASE[b"seg-06"]
            assert engine.sequence == sequence_after(len(RECORDS) - 1)
        shutil.rmtree(directory)


def test_a_damaged_middle_record_refuses_to_open_naming_the_log_and_offset(wal_image, tmp_path):
    start, end = wal_image.bounds[MIDDLE], wal_image.bounds[MIDDLE + 1]
    positions = list(range(start, end))
    big = wal_image.bounds[3]  # the long batch: its header, head, and value bytes
    positions += [big, big + 4, big + 8, big + 9, big + 30, wal_image.bounds[4] - 1]
    for position in positions:
        directory = wal_image.with_log(tmp_path / f"flip{position}",
                                       flipped(wal_image.wal, position))
        damaged_record = max(i for i, bound in enumerate(wal_image.bounds) if bound <= position)
        error = assert_open_refused(directory, directory / wal_image.wal_name,
                                    wal_image.bounds[damaged_record])
        assert wal_image.wal_name in str(error)
        shutil.rmtree(directory)
    # Repaired (the byte put back), the same directory opens with everything.
    directory = wal_image.with_log(tmp_path / "repaired", flipped(wal_image.wal, start + 12))
    assert_open_refused(directory, directory / wal_image.wal_name, start)
    (directory / wal_image.wal_name).write_bytes(wal_image.wal)
    assert_recovers(directory, len(RECORDS))


def test_writes_after_a_torn_tail_recovery_survive_a_reopen_and_another_crash(wal_image, tmp_path):
    cut = wal_image.bounds[-2] + 5
    directory = wal_image.with_log(tmp_path / "db", wal_image.wal[:cut])
    crashed = tmp_path / "crashed"
    expected = expected_after(len(RECORDS) - 1)
    with open_db(directory, fsync="always") as engine:
        assert live_state(engine) == expected
        seq = engine.put(b"after", b"recovery")
        assert seq == sequence_after(len(RECORDS) - 1) + 1  # reuses the torn record's number
        engine.delete(b"seg-07")
        engine.write_batch([(b"seg-06", b"rewritten"), (b"new-d", b"d")])
        expected.update({b"after": b"recovery", b"seg-06": b"rewritten", b"new-d": b"d"})
        del expected[b"seg-07"]
        sequence = engine.sequence
        # A second crash now: the truncated old log and the new one are both replayed.
        shutil.copytree(directory, crashed, ignore=shutil.ignore_patterns(files.LOCK))
    for reopened in (directory, crashed):
        with open_db(reopened) as engine:
            assert live_state(engine) == expected, reopened.name
            assert engine.sequence == sequence
            assert engine.get(b"seg-07") is None


def test_a_torn_last_record_whose_value_holds_log_records_is_cut_not_refused(tmp_path):
    # A value may hold bytes shaped like log records: here a backup of another log. Cut short
    # by a crash (or by ENOSPC mid-append), that record is a torn tail like any other; the
    # records inside its value are not "whole records following a damaged one".
    source = tmp_path / "source"
    crashed = tmp_path / "crashed"
    backup = b"".join(SCAN_RECORDS)
    with open_db(source, fsync="always") as engine:
        engine.put(b"a", b"1")
        engine.delete(b"b")
        engine.put(b"backup", b"log copy:" + backup + b":end")
        shutil.copytree(source, crashed, ignore=shutil.ignore_patterns(files.LOCK))
    (log_name,) = [name for name in os.listdir(crashed) if name.startswith("wal-")]
    log = (crashed / log_name).read_bytes()
    bounds = [0]
    while bounds[-1] < len(log):
        bounds.append(bounds[-1] + wal_format.HEADER.size
                      + wal_format.HEADER.unpack_from(log, bounds[-1])[1])
    last = bounds[-2]
    embedded = log.index(backup)
    for cut in (embedded + SCAN_BOUNDS[1], embedded + len(backup) - 1, embedded + len(backup),
                len(log) - 1):
        directory = tmp_path / f"cut{cut}"
        directory.mkdir()
        for name in os.listdir(crashed):
            shutil.copy(crashed / name, directory / name)
        (directory / log_name).write_bytes(log[:cut])
        try:
            with open_db(directory) as engine:
                assert live_state(engine) == {b"a": b"1"}, f"cut at byte {cut}"
                assert engine.sequence == 2
        except CorruptionError as exc:
            pytest.fail(f"a log whose last record ({last}..{len(log)}) is cut at byte {cut} "
                        f"was refused as corrupt: {exc}")


def test_stale_temporary_and_unlisted_files_are_removed_and_never_reused(wal_image, tmp_path):
    directory = materialize(wal_image.image, tmp_path / "db", **{
        files.MANIFEST + files.TMP_SUFFIX: b"half a manifest",
        files.segment_name(99) + files.TMP_SUFFIX: b"half a segment",
        files.segment_name(98): b"a finished merge the manifest never listed",
    })
    with open_db(directory) as engine:
        assert live_state(engine) == expected_after(len(RECORDS))
        names = set(os.listdir(directory))
        assert not names & {files.MANIFEST + files.TMP_SUFFIX,
                            files.segment_name(99) + files.TMP_SUFFIX, files.segment_name(98)}
        numbers = [files.parse_name(name)[1] for name in names if files.parse_name(name)]
        new_log = max(numbers)
        assert new_log > 99, "a new file took a number a dead worker may still rename into place"


# ---- the manifest ------------------------------------------------------------------------------

def test_a_flipped_manifest_byte_refuses_to_open_naming_the_manifest(wal_image, tmp_path):
    manifest = wal_image.image[files.MANIFEST]
    for position in range(len(manifest)):
        directory = materialize(wal_image.image, tmp_path / f"flip{position}",
                                **{files.MANIFEST: flipped(manifest, position)})
        assert_open_refused(directory, directory / files.MANIFEST)
        shutil.rmtree(directory)
    directory = materialize(wal_image.image, tmp_path / "repaired",
                            **{files.MANIFEST: flipped(manifest, len(manifest) - 1)})
    assert_open_refused(directory, directory / files.MANIFEST)
    (directory / files.MANIFEST).write_bytes(manifest)
    assert_recovers(directory, len(RECORDS))


def test_a_truncated_manifest_refuses_to_open(wal_image, tmp_path):
    manifest = wal_image.image[files.MANIFEST]
    for length in (0, 1, 7, 8, 11, 12, 13, len(manifest) - 1):
        directory = materialize(wal_image.image, tmp_path / f"cut{length}",
                                **{files.MANIFEST: manifest[:length]})
        assert_open_refused(directory, directory / files.MANIFEST)


def test_a_manifest_with_a_valid_checksum_but_bad_fields_refuses_to_open(wal_image, tmp_path):
    path_fields = [{"segments": "not a list of numbers", "log_number": 1, "next_file": 2,
                    "last_seq": 0},
                   {"segments": [], "next_file": 2, "last_seq": 0},
                   [1, 2, 3]]
    for index, fields in enumerate(path_fields):
        body = msgpack.packb(fields, use_bin_type=True)
        data = b"YADDBMF1" + zlib.crc32(body).to_bytes(4, "little") + body
        directory = materialize(wal_image.image, tmp_path / f"bad{index}", **{files.MANIFEST: data})
        assert_open_refused(directory, directory / files.MANIFEST)


@pytest.mark.parametrize("keep", ["segment and log", "log only", "segment only"])
def test_a_missing_manifest_beside_data_files_is_a_clear_error(wal_image, tmp_path, keep):
    image = {name: data for name, data in wal_image.image.items() if name != files.MANIFEST
             and not (keep == "log only" and name.startswith("seg-"))
             and not (keep == "segment only" and name.startswith("wal-"))}
    directory = materialize(image, tmp_path / "db")
    error = assert_open_refused(directory, directory / files.MANIFEST, error=StorageError)
    assert files.MANIFEST in str(error)
    assert set(os.listdir(directory)) - {files.LOCK} == set(image), "data files were removed"


# ---- segments ----------------------------------------------------------------------------------

OLD = {b"k%03d" % i: b"old value %d" % i for i in range(160)}
NEW = {key: (None if i % 7 == 3 else b"new value %d" % i) for i, key in enumerate(sorted(OLD)[:150])}


def segment_expected() -> dict:
    model = {**OLD, **NEW}
    return {key: value for key, value in model.items() if value is not None}


class SegmentImage:
    """Two segments, the newer shadowing most of the older; damage goes into the newer."""

    def __init__(self, image: Image, newer: str) -> None:
        self.image = image
        self.newer = newer
        self.number = files.parse_name(newer)[1]
        data = image[newer]
        self.size = len(data)
        self.footer = fmt.Footer.decode(data[-fmt.FOOTER.size:], self.size)
        self.footer_offset = self.size - fmt.FOOTER.size
        first_keys, offsets = fmt.decode_index(
            data[self.footer.index_offset:self.footer.index_offset + self.footer.index_length],
            self.footer.index_offset, self.footer.bloom_offset)
        self.blocks = []  # (start, end, keys)
        for start, end in zip(offsets, offsets[1:]):
            keys, _values = fmt.decode_data_block(data[start:end], start)
            self.blocks.append((start, end, keys))

    def damaged(self, directory: Path, data: bytes) -> Path:
        return materialize(self.image, directory, **{self.newer: data})


@pytest.fixture(scope="module")
def segment_image(tmp_path_factory) -> SegmentImage:
    source = tmp_path_factory.mktemp("segment-source")
    with Engine(str(source), compaction="manual", block_bytes=256) as engine:
        engine.write_batch(list(OLD.items()))
        engine.flush()
        engine.write_batch(list(NEW.items()))
        engine.flush()
        assert engine.stats()["segments"] == 2
    image = {name: (source / name).read_bytes() for name in os.listdir(source)
             if name != files.LOCK}
    assert not [name for name in image if name.startswith("wal-") and image[name]]
    newest = Manifest.decode(image[files.MANIFEST], files.MANIFEST).segments[0]
    made = SegmentImage(image, files.segment_name(newest))
    assert len(made.blocks) >= 6, "too few data blocks to damage one in the middle"
    with open_db(made.damaged(tmp_path_factory.mktemp("check") / "db", image[made.newer])) as e:
        assert live_state(e) == segment_expected()
    return made


def _footer_fields() -> list[tuple[str, int, int]]:
    names = ["bloom_offset", "bloom_length", "index_offset", "index_length", "entries",
             "tombstones", "max_seq", "format_version", "crc", "magic"]
    codes = fmt.FOOTER.format.lstrip("<=>!@")
    assert len(codes) == len(names)
    fields, offset = [], 0
    for name, code in zip(names, codes):
        fields.append((name, offset, struct.calcsize("<" + code)))
        offset += fields[-1][2]
    assert offset == fmt.FOOTER.size
    return fields


@pytest.mark.parametrize("which", ["first", "middle", "last"])
def test_a_damaged_data_block_is_never_served(segment_image, tmp_path, which):
    index = {"first": 0, "middle": len(segment_image.blocks) // 2,
             "last": len(segment_image.blocks) - 1}[which]
    start, end, damaged_keys = segment_image.blocks[index]
    other_keys = {key for _s, _e, keys in segment_image.blocks for key in keys} - set(damaged_keys)
    only_in_older = set(OLD) - set(NEW)
    expected = segment_expected()
    data = segment_image.image[segment_image.newer]
    for position in (start, start + 1, (start + end) // 2, end - 5, end - 4, end - 1):
        directory = segment_image.damaged(tmp_path / f"flip{position}", flipped(data, position))
        segment_path = str(directory / segment_image.newer)
        try:
            engine = open_db(directory)
        except CorruptionError as exc:  # refusing at open is fine too
            assert exc.path == segment_path
            continue
        with engine:
            for key in damaged_keys:  # its older version must not show through either
                with pytest.raises(CorruptionError) as info:
                    engine.get(key)
                assert info.value.path == segment_path and info.value.offset == start
            for key in other_keys:
                assert engine.get(key) == expected.get(key), key
            for key in only_in_older:  # a bloom false positive may read the damaged block
                try:
                    assert engine.get(key) == expected[key], key
                except CorruptionError as exc:
                    assert exc.path == segment_path
            with pytest.raises(CorruptionError) as info:
                list(engine.items())
            assert info.value.path == segment_path
        segment = Segment(segment_path, segment_image.number)
        try:
            with pytest.raises(CorruptionError) as info:
                segment.verify()
            assert info.value.path == segment_path and info.value.offset == start
        finally:
            segment.close()


def test_a_compaction_over_a_damaged_block_fails_without_losing_anything(segment_image, tmp_path):
    start, end, damaged_keys = segment_image.blocks[1]
    data = flipped(segment_image.image[segment_image.newer], (start + end) // 2)
    directory = segment_image.damaged(tmp_path / "db", data)
    segment_path = directory / segment_image.newer
    expected = segment_expected()
    with open_db(directory, compaction="thread") as engine:
        with pytest.raises(StorageError):
            engine.compact()
        assert segment_image.newer in (engine.stats()["compaction_error"] or "")
        assert engine.get(segment_image.blocks[0][2][0]) == expected.get(segment_image.blocks[0][2][0])
        with pytest.raises(CorruptionError):
            engine.get(damaged_keys[0])
        engine.put(b"still", b"writable")
    assert segment_path.read_bytes() == data, "the damaged input was deleted or rewritten"
    with open_db(directory) as engine:
        assert engine.get(b"still") == b"writable"
        with pytest.raises(CorruptionError) as info:
            engine.get(damaged_keys[-1])
        assert info.value.path == str(segment_path)


def test_a_damaged_bloom_block_refuses_to_open(segment_image, tmp_path):
    footer = segment_image.footer
    start, end = footer.bloom_offset, footer.bloom_offset + footer.bloom_length
    data = segment_image.image[segment_image.newer]
    # m (u64), k (u8), the bits, and the checksum
    for position in (start, start + 7, start + 8, start + 9, (start + end) // 2, end - 5, end - 1):
        directory = segment_image.damaged(tmp_path / f"flip{position}", flipped(data, position))
        assert_open_refused(directory, directory / segment_image.newer)
        with pytest.raises(CorruptionError) as info:
            Segment(str(directory / segment_image.newer), segment_image.number)
        assert info.value.path == str(directory / segment_image.newer)


def test_a_damaged_index_block_refuses_to_open(segment_image, tmp_path):
    footer = segment_image.footer
    start, end = footer.index_offset, footer.index_offset + footer.index_length
    data = segment_image.image[segment_image.newer]
    for position in (start, start + 1, (start + end) // 2, end - 5, end - 4, end - 1):
        directory = segment_image.damaged(tmp_path / f"flip{position}", flipped(data, position))
        assert_open_refused(directory, directory / segment_image.newer)


def test_every_damaged_footer_byte_refuses_to_open(segment_image, tmp_path):
    data = segment_image.image[segment_image.newer]
    base = segment_image.footer_offset
    for name, offset, width in _footer_fields():
        for position in range(base + offset, base + offset + width):
            for mask in (0xFF, 0x01):
                directory = segment_image.damaged(tmp_path / f"flip{position}-{mask}",
                                                  flipped(data, position, mask))
                try:
                    assert_open_refused(directory, directory / segment_image.newer)
                except BaseException as exc:
                    raise AssertionError(f"footer field {name}, byte {position - base - offset}, "
                                         f"mask {mask:#x}: {exc}") from exc
                shutil.rmtree(directory)


def test_a_truncated_or_extended_segment_refuses_to_open(segment_image, tmp_path):
    data = segment_image.image[segment_image.newer]
    footer = segment_image.footer
    lengths = {0, 1, fmt.FOOTER.size - 1, fmt.FOOTER.size, segment_image.blocks[1][0],
               footer.bloom_offset, footer.index_offset, segment_image.footer_offset,
               segment_image.size - 8, segment_image.size - 1}
    variants = {f"cut{length}": data[:length] for length in sorted(lengths)}
    variants["one byte more"] = data + b"\0"
    for label, damaged in variants.items():
        directory = segment_image.damaged(tmp_path / label.replace(" ", "-"), damaged)
        try:
            assert_open_refused(directory, directory / segment_image.newer)
        except BaseException as exc:
            raise AssertionError(f"{label}: {exc}") from exc


# ---- wal_format.scan on bytes ------------------------------------------------------------------

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


def test_scan_decodes_a_whole_log():
    scan = wal_format.scan(LOG)
    assert entries(scan) == SCAN_ENTRIES
    assert [b.first_seq for b in scan.batches] == [1, 2, 5, 6]
    assert scan.batches[1].last_seq == 4
    assert scan.valid_bytes == len(LOG) and scan.damage is None and scan.damage_offset is None
    assert wal_format.scan(b"") == wal_format.Scan([], 0)


def test_encode_single_is_a_batch_of_one():
    for key, value in [(b"k", b"v"), (b"k", b""), (b"k" * 1024, None), (b"\0", b"\xff" * 999)]:
        assert wal_format.encode_single(42, key, value) == wal_format.encode_batch(42, [(key, value)])


def test_scan_ignores_a_truncated_trailing_record():
    for cut in range(SCAN_BOUNDS[-2] + 1, len(LOG)):
        scan = wal_format.scan(LOG[:cut])
        assert entries(scan) == SCAN_ENTRIES[:-1], cut
        assert (scan.valid_bytes, scan.damage, scan.damage_offset) == (
            SCAN_BOUNDS[-2], "torn", SCAN_BOUNDS[-2]), cut


def test_scan_ignores_a_bad_length_at_the_end():
    start = SCAN_BOUNDS[-2]
    for length in (0xFFFFFFFF, wal_format.MAX_PAYLOAD + 1, len(SCAN_RECORDS[-1]),  # past the end
                   0, 5):                                                        # too short
        data = LOG[:start + 4] + struct.pack("<I", length) + LOG[start + 8:]
        scan = wal_format.scan(data)
        assert entries(scan) == SCAN_ENTRIES[:-1], length
        assert (scan.valid_bytes, scan.damage, scan.damage_offset) == (start, "torn", start)


def test_scan_reports_a_checksum_mismatch_mid_log_as_corrupt():
    for record in range(len(SCAN_RECORDS) - 1):
        for position in range(SCAN_BOUNDS[record], SCAN_BOUNDS[record + 1]):
            scan = wal_format.scan(flipped(LOG, position))
            assert scan.damage == "corrupt", (record, position)
            assert scan.damage_offset == scan.valid_bytes == SCAN_BOUNDS[record]
            assert entries(scan) == SCAN_ENTRIES[:record]


def test_scan_calls_a_damaged_last_record_torn():
    for position in range(SCAN_BOUNDS[-2], len(LOG)):
        scan = wal_format.scan(flipped(LOG, position))
        assert (scan.damage, scan.valid_bytes) == ("torn", SCAN_BOUNDS[-2]), position
        assert entries(scan) == SCAN_ENTRIES[:-1]


@pytest.mark.parametrize("zeros", [1, wal_format.HEADER.size - 1, wal_format.HEADER.size, 4096])
def test_scan_calls_a_zero_filled_tail_torn(zeros):
    scan = wal_format.scan(LOG + bytes(zeros))
    assert entries(scan) == SCAN_ENTRIES
    assert (scan.valid_bytes, scan.damage, scan.damage_offset) == (len(LOG), "torn", len(LOG))
    # A zero-filled region in the middle hides the records after it: that is corruption.
    scan = wal_format.scan(SCAN_RECORDS[0] + bytes(zeros) + b"".join(SCAN_RECORDS[1:]))
    assert (entries(scan), scan.damage, scan.damage_offset) == (
        SCAN_ENTRIES[:1], "corrupt", SCAN_BOUNDS[1])


def test_a_segment_the_manifest_lists_but_that_is_missing_refuses_to_open(segment_image, tmp_path):
    image = {name: data for name, data in segment_image.image.items() if name != segment_image.newer}
    directory = materialize(image, tmp_path / "db")
    assert_open_refused(directory, directory / segment_image.newer)


def test_a_segment_with_bytes_before_a_copy_of_its_footer_serves_correct_data_or_refuses(
        segment_image, tmp_path):
    # The footer still points at whole, checksummed blocks; what lies between is never read.
    data = segment_image.image[segment_image.newer]
    directory = segment_image.damaged(tmp_path / "db", data + data[-fmt.FOOTER.size:])
    try:
        engine = open_db(directory)
    except CorruptionError as exc:
        assert exc.path == str(directory / segment_image.newer)
        return
    with engine:
        assert live_state(engine) == segment_expected()


def test_scan_calls_a_torn_record_torn_even_when_its_value_holds_records():
    # The value of the last record is a copy of a whole log; cutting the record anywhere inside
    # or after that copy must not make the copy count as "whole records after the damage".
    torn = wal_format.encode_single(7, b"backup", b"copy:" + LOG + b":end")
    start = (LOG + torn).index(LOG, len(LOG))  # where the copy begins inside the record
    for cut in (start + SCAN_BOUNDS[1], start + SCAN_BOUNDS[-1], len(LOG) + len(torn) - 1):
        scan = wal_format.scan((LOG + torn)[:cut])
        assert entries(scan) == SCAN_ENTRIES, cut
        assert (scan.valid_bytes, scan.damage) == (len(LOG), "torn"), cut
