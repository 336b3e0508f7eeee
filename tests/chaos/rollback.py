"""The nodes' rollback files, read for the checker (checker.py, its `rolled_back` parameter).

A master replaced by a failover that comes back as a slave keeps the writes it had applied past
the fork (possible only with w=1) in DATA_DIR/rollback/*.jsonl (docs/failover.md, "Rejoin and
rollback"; yaddb/replication/rollback.py writes them): one JSON object per line, one line per
key (the last write the old master made to it), with at least

    "key"           the key, in hex
    "seq"           that write's sequence number on the old master (null when not exact)
    "deleted"       true for a delete (then the item's fields may be absent or null)
    "content_type", "encoding", "value"
                    the item as the HTTP edge's /query shows it: "value" is the text of the
                    bytes when they are UTF-8, else their base64 with "value_encoding": "base64"
    "exact"         whether the line is the old master's write past the fork (false: its logs
                    no longer reached back to the fork, so it kept each key whose value
                    differed from the new master's; a "deleted" line then only says it lacked
                    a key the new master had)

Anything else in a line is left alone. A line that does not say this is an error naming its
file and line: a rollback file is for a person to act on, and one the test cannot read would be
one a person cannot either.
"""
from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Iterable, Mapping, Optional

ROLLBACK_DIR = "rollback"


class RollbackFileError(AssertionError):
    """A rollback file the test cannot read: its path, line and what is wrong."""


@dataclass(frozen=True)
class RolledBack:
    node: str
    path: str
    line: int
    key: bytes
    value: Optional[bytes]  # None: a rolled-back delete
    seq: Optional[int]
    exact: bool
    epoch: Optional[int] = None  # from the file's name, <epoch>-<time>.jsonl: the one the
    #                              node stepped down at (None when the name does not say)

    @property
    def pair(self) -> tuple[bytes, Optional[bytes]]:
        return self.key, self.value


def read_rollbacks(data_dirs: Mapping[str, Path]) -> list[RolledBack]:
    """Every line of every node's DATA_DIR/rollback/*.jsonl, node by node, file by file (in
    name order), line by line. A node with no rollback directory has none."""
    found: list[RolledBack] = []
    for node, data_dir in data_dirs.items():
        directory = Path(data_dir) / ROLLBACK_DIR
        if not directory.is_dir():
            continue
        for path in sorted(directory.glob("*.jsonl")):
            with open(path, "rb") as file:
                content = file.read()
            if content and not content.endswith(b"\n"):
                raise RollbackFileError(f"{path}: the last line is not ended by a newline (a "
                                        "file cut short?)")
            head = path.name.split("-", 1)[0]
            epoch = int(head) if head.isdigit() else None
            for number, raw in enumerate(content.splitlines(), 1):
                if raw.strip():
                    found.append(replace(parse_line(node, str(path), number, raw), epoch=epoch))
    return found


def pairs(entries: Iterable[RolledBack]) -> frozenset:
    """What the checker takes: (key, value or None)."""
    return frozenset(entry.pair for entry in entries)


def parse_line(node: str, path: str, number: int, raw: bytes) -> RolledBack:
    def wrong(what: str) -> RollbackFileError:
        return RollbackFileError(f"{path} line {number}: {what}: {raw[:200]!r}")

    try:
        doc = json.loads(raw)
    except ValueError as exc:
        raise wrong(f"not JSON ({exc})") from None
    if not isinstance(doc, dict):
        raise wrong("not a JSON object")
    missing = [name for name in ("key", "seq", "deleted", "exact") if name not in doc]
    if missing:
        raise wrong(f"no {', '.join(missing)}")
    deleted, exact, seq = doc["deleted"], doc["exact"], doc["seq"]
    if type(deleted) is not bool or type(exact) is not bool:
        raise wrong('"deleted" and "exact" must be true or false')
    if not (seq is None and not exact) and (type(seq) is not int or seq < 0):
        raise wrong('"seq" must be a number >= 0 (or null on a line that is not exact)')
    try:
        key = bytes.fromhex(doc["key"]) if isinstance(doc["key"], str) else None
    except ValueError:
        key = None
    if key is None:
        raise wrong('"key" must be hex')
    return RolledBack(node, path, number, key, None if deleted else _value(doc, wrong), seq, exact)


def _value(doc: dict, wrong) -> bytes:
    for name in ("content_type", "encoding", "value"):
        if not isinstance(doc.get(name), str):
            raise wrong(f'a write needs "{name}", a string, as the HTTP edge shows items')
    encoding = doc.get("value_encoding", "utf-8")
    if encoding == "utf-8":
        try:
            return doc["value"].encode("utf-8")
        except UnicodeEncodeError:
            raise wrong('"value" is not text (a lone surrogate?)') from None
    if encoding == "base64":
        try:
            return base64.b64decode(doc["value"], validate=True)
        except (binascii.Error, ValueError):
            raise wrong('"value" is not base64, as "value_encoding" says') from None
    raise wrong(f'"value_encoding" must be "utf-8" or "base64", not {encoding!r}')
