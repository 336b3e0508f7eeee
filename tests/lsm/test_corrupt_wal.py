"""Damaged write-ahead logs: recovery keeps every whole record before a torn tail, cuts the
tail off, and refuses (naming the log and the offset) when whole records follow the damage."""
from __future__ import annotations

import os
import random
import shutil

import pytest

from yaddb.errors import CorruptionError
from yaddb.lsm import files, wal_format
from tests.lsm.corruption import (BASE, MIDDLE, RECORDS, SCAN_BOUNDS, SCAN_RECORDS,
                                  assert_open_refused, assert_recovers, expected_after, flipped,
                                  live_state, open_db, sequence_after)


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
    written = (crashed / log_name).read_bytes()
    log = written[:wal_format.scan(written).valid_bytes]  # without the zero-filled end
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
