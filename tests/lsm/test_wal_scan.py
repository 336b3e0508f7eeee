"""wal_format.scan on bytes, no files (LevelDB log_test style): a torn tail is cut quietly, a
checksum mismatch before whole records is corruption, and the offsets say where."""
from __future__ import annotations

import struct

import pytest

from yaddb.lsm import wal_format
from tests.lsm.corruption import LOG, SCAN_BOUNDS, SCAN_ENTRIES, SCAN_RECORDS, entries, flipped


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
def test_scan_ends_a_log_at_its_zero_filled_end(zeros):
    scan = wal_format.scan(LOG + bytes(zeros))  # a log is zero-filled ahead of its records
    assert entries(scan) == SCAN_ENTRIES
    assert (scan.valid_bytes, scan.damage, scan.damage_offset) == (len(LOG), None, None)
    # A zero-filled region in the middle that holds no whole page hides the records after
    # it: that is corruption.
    scan = wal_format.scan(SCAN_RECORDS[0] + bytes(zeros) + b"".join(SCAN_RECORDS[1:]))
    assert (entries(scan), scan.damage, scan.damage_offset) == (
        SCAN_ENTRIES[:1], "corrupt", SCAN_BOUNDS[1])


def test_scan_calls_records_after_an_unwritten_page_a_torn_tail():
    # A crash may leave a page of a zero-filled log unwritten while a later one was written
    # back: those records were never synced, so never acknowledged.
    page = wal_format.PAGE_BYTES
    records = [wal_format.encode_single(seq, b"k%d" % seq, b"v" * 50) for seq in range(1, 200)]
    log = b"".join(records)
    bounds = [sum(map(len, records[:n])) for n in range(len(records) + 1)]
    whole = max(n for n, bound in enumerate(bounds) if bound <= page)  # records before the page
    unwritten = log[:page] + bytes(page) + log[2 * page:]
    scan = wal_format.scan(unwritten)
    assert (scan.damage, scan.valid_bytes, len(scan.batches)) == ("torn", bounds[whole], whole)
    # The same zeros a byte off a page boundary are not an unwritten page: corruption.
    shifted = log[:page + 1] + bytes(page) + log[2 * page + 1:]
    scan = wal_format.scan(shifted)
    assert scan.damage == "corrupt" and len(scan.batches) == whole


def test_scan_calls_a_torn_record_torn_even_when_its_value_holds_records():
    # The value of the last record is a copy of a whole log; cutting the record anywhere inside
    # or after that copy must not make the copy count as "whole records after the damage".
    torn = wal_format.encode_single(7, b"backup", b"copy:" + LOG + b":end")
    start = (LOG + torn).index(LOG, len(LOG))  # where the copy begins inside the record
    for cut in (start + SCAN_BOUNDS[1], start + SCAN_BOUNDS[-1], len(LOG) + len(torn) - 1):
        scan = wal_format.scan((LOG + torn)[:cut])
        assert entries(scan) == SCAN_ENTRIES, cut
        assert (scan.valid_bytes, scan.damage) == (len(LOG), "torn"), cut
