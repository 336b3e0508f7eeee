"""Segment (SSTable) file format: pure functions over bytes, no files.

    [data block]*   msgpack [keys, values] | crc32 u32     keys sorted, value None = tombstone
    [bloom block]   bloom.to_bytes()       | crc32 u32
    [index block]   msgpack [first_keys, offsets] | crc32 u32
                    first_keys[i] is the first key of data block i; offsets has one entry per
                    block plus the end of the data, so block i is bytes offsets[i]..offsets[i+1]
    [footer]        FOOTER below, FOOTER.size bytes, ending in MAGIC

All integers little-endian. crc32 is zlib's, over the block's bytes before it.
"""
from __future__ import annotations

import struct
import zlib
from array import array
from dataclasses import dataclass
from typing import Optional

import msgpack

FORMAT_VERSION = 1
MAGIC = 0x59414444_42535354  # "YADDBSST"
# bloom_offset, bloom_length, index_offset, index_length, entries, tombstones, max_seq,
# format_version, crc32 of the preceding fields, magic
FOOTER = struct.Struct("<QIQIQQQIIQ")
_CRC = struct.Struct("<I")


class FormatError(ValueError):
    """Bytes that are not what the format says; the caller adds the path."""

    def __init__(self, offset: int, what: str) -> None:
        super().__init__(what)
        self.offset = offset
        self.what = what


@dataclass(frozen=True)
class Footer:
    bloom_offset: int
    bloom_length: int
    index_offset: int
    index_length: int
    entries: int
    tombstones: int
    max_seq: int

    def encode(self) -> bytes:
        fields = (self.bloom_offset, self.bloom_length, self.index_offset, self.index_length,
                  self.entries, self.tombstones, self.max_seq, FORMAT_VERSION)
        head = FOOTER.pack(*fields, 0, MAGIC)[:FOOTER.size - 12]
        return head + _CRC.pack(zlib.crc32(head)) + MAGIC.to_bytes(8, "little")

    @classmethod
    def decode(cls, data: bytes, file_size: int) -> "Footer":
        offset = file_size - FOOTER.size
        if len(data) != FOOTER.size:
            raise FormatError(max(offset, 0), "file too short for a segment footer")
        (bloom_offset, bloom_length, index_offset, index_length, entries, tombstones, max_seq,
         version, crc, magic) = FOOTER.unpack(data)
        if magic != MAGIC:
            raise FormatError(offset, "no segment magic number at the end (not a segment, or cut short)")
        if zlib.crc32(data[:FOOTER.size - 12]) != crc:
            raise FormatError(offset, "footer checksum mismatch")
        if version != FORMAT_VERSION:
            raise FormatError(offset, f"segment format version {version}; this build reads {FORMAT_VERSION}")
        if not (bloom_offset + bloom_length <= index_offset
                and index_offset + index_length <= offset):
            raise FormatError(offset, "footer points outside the file")
        return cls(bloom_offset, bloom_length, index_offset, index_length, entries, tombstones, max_seq)


def seal(payload: bytes) -> bytes:
    """A block: payload followed by its crc32."""
    return payload + _CRC.pack(zlib.crc32(payload))


def unseal(block: bytes, offset: int, what: str) -> bytes:
    """The payload of a block read at `offset`, after checking its crc32."""
    if len(block) < _CRC.size:
        raise FormatError(offset, f"{what} block shorter than its checksum")
    payload = block[:-_CRC.size]
    if zlib.crc32(payload) != _CRC.unpack_from(block, len(block) - _CRC.size)[0]:
        raise FormatError(offset, f"{what} block checksum mismatch")
    return payload


def encode_data_block(keys: list[bytes], values: list[Optional[bytes]]) -> bytes:
    return seal(msgpack.packb([keys, values], use_bin_type=True))


def read_data_block(data, start: int, end: int) -> tuple[list[bytes], list[Optional[bytes]]]:
    """The data block at data[start:end] (any buffer, e.g. an mmap), checked.

    The common case costs one copy of the payload, one crc and one unpack."""
    payload = data[start:end - _CRC.size]
    if zlib.crc32(payload) == _CRC.unpack_from(data, end - _CRC.size)[0]:
        try:
            keys, values = msgpack.unpackb(payload)
            return keys, values
        except Exception:
            pass  # decode_data_block below says what is wrong
    return decode_data_block(data[start:end], start)


def decode_data_block(block: bytes, offset: int) -> tuple[list[bytes], list[Optional[bytes]]]:
    try:
        keys, values = msgpack.unpackb(unseal(block, offset, "data"))
    except FormatError:
        raise
    except Exception as exc:  # msgpack raises several types on malformed input
        raise FormatError(offset, f"data block does not decode: {exc}") from None
    return keys, values


def encode_index(first_keys: list[bytes], offsets: list[int]) -> bytes:
    return seal(msgpack.packb([first_keys, offsets], use_bin_type=True))


def decode_index(block: bytes, offset: int, data_end: int) -> tuple[list[bytes], array]:
    try:
        first_keys, offsets = msgpack.unpackb(unseal(block, offset, "index"))
        positions = array("Q", offsets)
    except FormatError:
        raise
    except Exception as exc:
        raise FormatError(offset, f"index block does not decode: {exc}") from None
    if (len(positions) != len(first_keys) + 1 or (positions and positions[-1] != data_end)
            or any(a >= b for a, b in zip(positions, positions[1:]))
            or not all(isinstance(k, bytes) for k in first_keys)):
        raise FormatError(offset, "index block is inconsistent with the file")
    return first_keys, positions
