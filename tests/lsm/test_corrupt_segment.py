"""Damaged segment files (data, bloom and index blocks, footer, length, a missing file): never
served; a read or an open fails with a CorruptionError naming the segment, and nothing is lost."""
from __future__ import annotations

import os
import shutil
import struct
from pathlib import Path

import pytest

from yaddb.errors import CorruptionError, StorageError
from yaddb.lsm import Engine, files
from yaddb.lsm import sstable_format as fmt
from yaddb.lsm.manifest import Manifest
from yaddb.lsm.sstable import Segment
from tests.lsm.corruption import Image, assert_open_refused, flipped, live_state, materialize, open_db

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
