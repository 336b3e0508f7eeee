"""The manifest: which segments are live, which logs still matter, and the flushed sequence.

It is one small file, replaced atomically (temp file, fsync, rename, fsync directory), so a crash
at any instant leaves either the previous or the next consistent set. Format:

    magic b"YADDBMF1" | crc32 u32 of the rest | msgpack {"segments", "log_number", "next_file", "last_seq"}

`segments` lists segment file numbers newest first; `log_number` is the oldest log that may hold
writes not yet in a segment; `last_seq` is the highest sequence number stored in segments.
"""
from __future__ import annotations

import os
import zlib
from dataclasses import dataclass, field

import msgpack

from yaddb.errors import CorruptionError
from yaddb.durable import write_atomically
from yaddb.lsm.files import MANIFEST

MAGIC = b"YADDBMF1"


@dataclass(frozen=True)
class Manifest:
    segments: tuple[int, ...] = ()
    log_number: int = 0
    next_file: int = 1
    last_seq: int = 0
    extra: dict = field(default_factory=dict)   # room for later fields, e.g. replication state

    def encode(self) -> bytes:
        body = msgpack.packb({"segments": list(self.segments), "log_number": self.log_number,
                              "next_file": self.next_file, "last_seq": self.last_seq,
                              "extra": self.extra}, use_bin_type=True)
        return MAGIC + zlib.crc32(body).to_bytes(4, "little") + body

    @classmethod
    def decode(cls, data: bytes, path: str) -> "Manifest":
        if data[:len(MAGIC)] != MAGIC or len(data) < len(MAGIC) + 4:
            raise CorruptionError(path, 0, "not a YADDB manifest (bad magic)")
        body = data[len(MAGIC) + 4:]
        if zlib.crc32(body) != int.from_bytes(data[len(MAGIC):len(MAGIC) + 4], "little"):
            raise CorruptionError(path, len(MAGIC), "manifest checksum mismatch")
        try:
            fields = msgpack.unpackb(body)
            return cls(tuple(int(n) for n in fields["segments"]), int(fields["log_number"]),
                       int(fields["next_file"]), int(fields["last_seq"]), dict(fields.get("extra", {})))
        except Exception as exc:
            raise CorruptionError(path, len(MAGIC) + 4, f"manifest fields unreadable: {exc}") from None


def load(directory: str) -> Manifest | None:
    path = os.path.join(directory, MANIFEST)
    try:
        with open(path, "rb") as file:
            return Manifest.decode(file.read(), path)
    except FileNotFoundError:
        return None


def store(directory: str, manifest: Manifest) -> None:
    write_atomically(os.path.join(directory, MANIFEST), manifest.encode())
