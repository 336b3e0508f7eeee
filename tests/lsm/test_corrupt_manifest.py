"""A damaged, truncated, invalid or missing MANIFEST refuses to open, naming it, and touches no
file; stale temporary files and segments the manifest never listed are removed, their numbers
never reused."""
from __future__ import annotations

import os
import shutil
import zlib

import msgpack
import pytest

from yaddb.durable import TMP_SUFFIX
from yaddb.errors import StorageError
from yaddb.lsm import files
from tests.lsm.corruption import (RECORDS, assert_open_refused, assert_recovers, expected_after,
                                  flipped, live_state, materialize, open_db)


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



def test_stale_temporary_and_unlisted_files_are_removed_and_never_reused(wal_image, tmp_path):
    directory = materialize(wal_image.image, tmp_path / "db", **{
        files.MANIFEST + TMP_SUFFIX: b"half a manifest",
        files.segment_name(99) + TMP_SUFFIX: b"half a segment",
        files.segment_name(98): b"a finished merge the manifest never listed",
    })
    with open_db(directory) as engine:
        assert live_state(engine) == expected_after(len(RECORDS))
        names = set(os.listdir(directory))
        assert not names & {files.MANIFEST + TMP_SUFFIX,
                            files.segment_name(99) + TMP_SUFFIX, files.segment_name(98)}
        numbers = [files.parse_name(name)[1] for name in names if files.parse_name(name)]
        new_log = max(numbers)
        assert new_log > 99, "a new file took a number a dead worker may still rename into place"

