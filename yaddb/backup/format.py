"""The backup file, pure over bytes: a magic, then checksummed frames.

    MAGIC  b"YADDBBK\\x01"
    frame  length (4 bytes, big-endian) | CRC-32 of the payload (4 bytes) | payload (msgpack)

The payloads, in order: ["header", {...}] once, ["items", [[key, value], ...]] any number of
times with keys strictly ascending across the whole file, and ["end", {"items": N}] last.
A file without its end frame was cut short (a backup that did not finish) and is refused,
as is any frame whose checksum or order is wrong: a restore never takes half a backup.
"""
from __future__ import annotations

import struct
import zlib
from typing import BinaryIO, Iterator, Optional

import msgpack

from yaddb.errors import BadBackup

__all__ = ["MAGIC", "header_frame", "items_frame", "end_frame", "BackupReader"]

MAGIC = b"YADDBBK\x01"
_FRAME = struct.Struct(">II")
MAX_FRAME_BYTES = 256 << 20  # far above a chunk (a few MiB at most); bounds what a bad length asks


def _frame(kind: str, body: object) -> bytes:
    payload = msgpack.packb([kind, body], use_bin_type=True)
    return _FRAME.pack(len(payload), zlib.crc32(payload)) + payload


def header_frame(header: dict) -> bytes:
    """MAGIC and the header: where and when the backup was taken, and as of which sequence."""
    return MAGIC + _frame("header", header)


def items_frame(items: list) -> bytes:
    return _frame("items", items)


def end_frame(count: int) -> bytes:
    return _frame("end", {"items": count})


class BackupReader:
    """Reads a backup file: `header`, then `chunks()` yields lists of (key, value) in key
    order, checking every frame; BadBackup says what is wrong and where."""

    def __init__(self, file: BinaryIO, name: str = "the backup") -> None:
        self._file = file
        self.name = name
        self.offset = 0
        if self._read(len(MAGIC), "its start") != MAGIC:
            raise BadBackup(f"{name} is not a YADDB backup (no {MAGIC!r} at its start); give "
                            f"the file `yaddb backup` wrote")
        kind, header = self._next()
        if kind != "header" or not isinstance(header, dict) or type(header.get("seq")) is not int:
            raise self._bad("its first frame is not a header")
        self.header: dict = header

    def chunks(self) -> Iterator[list[tuple[bytes, bytes]]]:
        count = 0
        last: Optional[bytes] = None
        while True:
            kind, body = self._next()
            if kind == "end":
                if not isinstance(body, dict) or body.get("items") != count:
                    raise self._bad(f"its end says {body!r} items, but it holds {count}")
                if self._file.read(1):
                    raise self._bad("there are bytes after its end")
                return
            if kind != "items" or not isinstance(body, list):
                raise self._bad(f"a frame of kind {kind!r} where items or the end belong")
            chunk = []
            for pair in body:
                if not (isinstance(pair, list) and len(pair) == 2 and type(pair[0]) is bytes
                        and type(pair[1]) is bytes) or (last is not None and pair[0] <= last):
                    raise self._bad("an item that is not a (key, value) in key order")
                last = pair[0]
                chunk.append((pair[0], pair[1]))
            count += len(chunk)
            yield chunk

    def _next(self) -> tuple[str, object]:
        length, crc = _FRAME.unpack(self._read(_FRAME.size, "a frame's length"))
        if length > MAX_FRAME_BYTES:
            raise self._bad(f"a frame claims {length} bytes")
        payload = self._read(length, "a frame")
        if zlib.crc32(payload) != crc:
            raise self._bad("a frame fails its checksum")
        try:
            kind, body = msgpack.unpackb(payload, raw=False)
        except (ValueError, TypeError, msgpack.UnpackException) as exc:
            raise self._bad(f"a frame does not decode ({exc})") from None
        return kind, body

    def _read(self, size: int, what: str) -> bytes:
        data = self._file.read(size)
        if len(data) != size:
            raise self._bad(f"it ends inside {what}: the backup was cut short (did it finish?)")
        self.offset += size
        return data

    def _bad(self, what: str) -> BadBackup:
        return BadBackup(f"{self.name} is damaged near byte {self.offset}: {what}; take the "
                         f"backup again, or use another copy")

