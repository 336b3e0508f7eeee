"""Write-ahead log record format: pure functions over bytes, no files.

Every record is one write batch (a single put is a batch of one):

    0   u32  crc32 of bytes 4..13 (the rest of the header)
    4   u32  payload length n
    8   u8   kind (1 = batch; 0 is reserved and never written)
    9   u32  crc32 of the payload
    13  n    payload: first_seq u64 | count u32 | count x entry
             entry: op u8 (1 put, 2 delete) | key_len u16 | value_len u32 | key | value

Entries of a batch carry sequence numbers first_seq, first_seq + 1, ...
A delete has value_len 0 and no value bytes.

The header has its own checksum so its length can be trusted alone: a record whose sound
header says it runs past the end of the log was cut short by a crash, whatever its payload
holds (a value may itself contain bytes shaped like records).

A log is zero-filled ahead of its records (wal.py), so zero bytes from some offset to the end
are its unused end, not damage. Below that end a crash can leave whole pages unwritten (the
kernel writes dirty pages back in any order, and records not yet synced were never
acknowledged): damage that reaches a page of zeros before the next whole record is a torn
tail, not corruption.
"""
from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass
from typing import Iterable, Optional

HEADER = struct.Struct("<IIBI")         # header crc, payload length, kind, payload crc
_HEADER_REST = struct.Struct("<IBI")    # the part of the header its crc covers
BATCH_HEAD = struct.Struct("<QI")       # first_seq, count
ENTRY_HEAD = struct.Struct("<BHI")      # op, key length, value length
SINGLE = struct.Struct("<QIBHI")        # batch head and entry head of a one-entry batch
KIND_BATCH = 1
OP_PUT = 1
OP_DELETE = 2
MAX_PAYLOAD = 1 << 31
PAGE_BYTES = 4096  # what a crash may leave unwritten below the end of a zero-filled log
_KIND_BYTE = bytes((KIND_BATCH,))
_KIND_OFFSET = 8                    # where the kind byte sits in a header

Entry = tuple[bytes, Optional[bytes]]  # (key, value); value None is a delete


def _seal(payload: bytes) -> bytes:
    rest = _HEADER_REST.pack(len(payload), KIND_BATCH, zlib.crc32(payload))
    return zlib.crc32(rest).to_bytes(4, "little") + rest + payload


def encode_single(seq: int, key: bytes, value: Optional[bytes]) -> bytes:
    """One put (value bytes) or delete (value None) as a whole record."""
    if value is None:
        return _seal(SINGLE.pack(seq, 1, OP_DELETE, len(key), 0) + key)
    # _seal inlined: this runs once per put.
    payload = SINGLE.pack(seq, 1, OP_PUT, len(key), len(value)) + key + value
    rest = _HEADER_REST.pack(len(payload), KIND_BATCH, zlib.crc32(payload))
    return zlib.crc32(rest).to_bytes(4, "little") + rest + payload


def encode_batch(first_seq: int, entries: Iterable[Entry]) -> bytes:
    parts = []
    count = 0
    for key, value in entries:
        if value is None:
            parts.append(ENTRY_HEAD.pack(OP_DELETE, len(key), 0))
            parts.append(key)
        else:
            parts.append(ENTRY_HEAD.pack(OP_PUT, len(key), len(value)))
            parts.append(key)
            parts.append(value)
        count += 1
    return _seal(BATCH_HEAD.pack(first_seq, count) + b"".join(parts))


@dataclass(frozen=True)
class Batch:
    first_seq: int
    entries: list[Entry]

    @property
    def last_seq(self) -> int:
        return self.first_seq + len(self.entries) - 1


@dataclass(frozen=True)
class Scan:
    """What a log holds: its whole batches, where they end, and what follows them."""

    batches: list[Batch]
    valid_bytes: int                 # the prefix made of whole, checksummed records
    damage: Optional[str] = None     # None, "torn" (nothing valid follows) or "corrupt"
    damage_offset: Optional[int] = None


class _BadPayload(Exception):
    pass


def _decode_payload(payload: bytes) -> Batch:
    if len(payload) < BATCH_HEAD.size:
        raise _BadPayload("short batch header")
    first_seq, count = BATCH_HEAD.unpack_from(payload, 0)
    entries: list[Entry] = []
    pos = BATCH_HEAD.size
    for _ in range(count):
        if pos + ENTRY_HEAD.size > len(payload):
            raise _BadPayload("entry header past the payload")
        op, key_len, value_len = ENTRY_HEAD.unpack_from(payload, pos)
        pos += ENTRY_HEAD.size
        end = pos + key_len + value_len
        if end > len(payload) or op not in (OP_PUT, OP_DELETE) or key_len == 0:
            raise _BadPayload("entry does not fit")
        key = payload[pos:pos + key_len]
        entries.append((key, payload[pos + key_len:end] if op == OP_PUT else None))
        pos = end
    if pos != len(payload):
        raise _BadPayload("bytes after the last entry")
    return Batch(first_seq, entries)


def _header_at(data: bytes, offset: int) -> Optional[tuple[int, int]]:
    """(payload length, payload crc) if a sound header starts at offset, else None."""
    if offset + HEADER.size > len(data):
        return None
    crc, length, kind, payload_crc = HEADER.unpack_from(data, offset)
    if zlib.crc32(data[offset + 4:offset + HEADER.size]) != crc or kind != KIND_BATCH:
        return None
    return length, payload_crc


def _record_at(data: bytes, offset: int, after_seq: int) -> Optional[tuple[Batch, int]]:
    """(batch, end) for a whole, valid record at offset numbered after after_seq, else None."""
    header = _header_at(data, offset)
    if header is None:
        return None
    length, payload_crc = header
    end = offset + HEADER.size + length
    if end > len(data) or zlib.crc32(data[offset + HEADER.size:end]) != payload_crc:
        return None
    try:
        batch = _decode_payload(data[offset + HEADER.size:end])
    except _BadPayload:
        return None
    return (batch, end) if batch.first_seq > after_seq else None


def _next_record_from(data: bytes, start: int, after_seq: int) -> Optional[int]:
    """Where the first whole record at or after start begins, if any: tells mid-log damage
    from a torn tail. Only offsets whose kind byte is right are tried."""
    position = data.find(_KIND_BYTE, start + _KIND_OFFSET)
    while position != -1 and position - _KIND_OFFSET + HEADER.size <= len(data):
        if _record_at(data, position - _KIND_OFFSET, after_seq) is not None:
            return position - _KIND_OFFSET
        position = data.find(_KIND_BYTE, position + 1)
    return None


def _zeros(data: bytes, start: int, end: int) -> bool:
    return data.count(0, start, end) == end - start


def _zero_page_in(data: bytes, start: int, end: int) -> bool:
    """Whether [start, end) holds a whole page-aligned page of zeros: one a crash left
    unwritten in a zero-filled log."""
    page = -(-start // PAGE_BYTES) * PAGE_BYTES
    while page + PAGE_BYTES <= end:
        if _zeros(data, page, page + PAGE_BYTES):
            return True
        page += PAGE_BYTES
    return False


def scan(data: bytes) -> Scan:
    """Decode a whole log. Stops at its zero-filled end, or at the first record that is cut
    short or fails a checksum."""
    batches: list[Batch] = []
    offset = 0
    last_seq = 0
    while offset < len(data):
        found = _record_at(data, offset, last_seq)
        if found is None:
            if _zeros(data, offset, len(data)):
                return Scan(batches, offset)  # the unused end of the log
            header = _header_at(data, offset)
            if header is not None and offset + HEADER.size + header[0] > len(data):
                return Scan(batches, offset, "torn", offset)  # a sound header, its payload cut
            # With a sound header the damage is confined to its payload, so look past it;
            # otherwise the length is unknown and any later offset may start a record.
            resume = offset + 1 if header is None else offset + HEADER.size + header[0]
            following = _next_record_from(data, resume, last_seq)
            torn = following is None or _zero_page_in(data, offset, following)
            return Scan(batches, offset, "torn" if torn else "corrupt", offset)
        batch, offset = found
        batches.append(batch)
        last_seq = batch.last_seq
    return Scan(batches, offset)
