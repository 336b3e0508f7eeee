"""Write-ahead log record format: pure functions over bytes, no files.

Every record is one write batch (a single put is a batch of one):

    0   u32  crc32 of bytes 4..end (covers length, kind and payload)
    4   u32  payload length n
    8   u8   kind (1 = batch; 0 is reserved and never written)
    9   n    payload: first_seq u64 | count u32 | count x entry
             entry: op u8 (1 put, 2 delete) | key_len u16 | value_len u32 | key | value

Entries of a batch carry sequence numbers first_seq, first_seq + 1, ...
A delete has value_len 0 and no value bytes.
"""
from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass
from typing import Iterable, Optional

HEADER = struct.Struct("<IIB")          # crc, payload length, kind
BATCH_HEAD = struct.Struct("<QI")       # first_seq, count
ENTRY_HEAD = struct.Struct("<BHI")      # op, key length, value length
SINGLE = struct.Struct("<IBQIBHI")      # payload length .. first entry head, for one-entry records
KIND_BATCH = 1
OP_PUT = 1
OP_DELETE = 2
_LENGTH_AND_KIND = 5  # bytes of the header after the crc, covered by it
MAX_PAYLOAD = 1 << 31

Entry = tuple[bytes, Optional[bytes]]  # (key, value); value None is a delete


def encode_single(seq: int, key: bytes, value: Optional[bytes]) -> bytes:
    """One put (value bytes) or delete (value None) as a whole record."""
    if value is None:
        body = SINGLE.pack(BATCH_HEAD.size + ENTRY_HEAD.size + len(key), KIND_BATCH,
                           seq, 1, OP_DELETE, len(key), 0) + key
    else:
        body = SINGLE.pack(BATCH_HEAD.size + ENTRY_HEAD.size + len(key) + len(value),
                           KIND_BATCH, seq, 1, OP_PUT, len(key), len(value)) + key + value
    return zlib.crc32(body).to_bytes(4, "little") + body


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
    payload = BATCH_HEAD.pack(first_seq, count) + b"".join(parts)
    body = HEADER.pack(0, len(payload), KIND_BATCH)[4:] + payload
    return zlib.crc32(body).to_bytes(4, "little") + body


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


def _record_at(data: bytes, offset: int) -> tuple[Optional[Batch], int]:
    """(batch, end) for a valid record at offset; (None, 0) if it is not one."""
    if offset + HEADER.size > len(data):
        return None, 0
    crc, length, kind = HEADER.unpack_from(data, offset)
    end = offset + HEADER.size + length
    if kind != KIND_BATCH or length > MAX_PAYLOAD or end > len(data):
        return None, 0
    if zlib.crc32(data[offset + 4:end]) != crc:
        return None, 0
    try:
        return _decode_payload(data[offset + HEADER.size:end]), end
    except _BadPayload:
        return None, 0


def _valid_record_after(data: bytes, offset: int) -> bool:
    """Whether any whole record starts after offset: tells mid-log damage from a torn tail."""
    for candidate in range(offset + 1, len(data) - HEADER.size + 1):
        if _record_at(data, candidate)[0] is not None:
            return True
    return False


def scan(data: bytes) -> Scan:
    """Decode a whole log. Stops at the first record that is cut short or fails its checksum."""
    batches: list[Batch] = []
    offset = 0
    while offset < len(data):
        batch, end = _record_at(data, offset)
        if batch is None:
            damage = "corrupt" if _valid_record_after(data, offset) else "torn"
            return Scan(batches, offset, damage, offset)
        batches.append(batch)
        offset = end
    return Scan(batches, offset)
