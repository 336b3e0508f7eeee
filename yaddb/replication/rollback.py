"""Writes a replaced master took that the new master never got: found, and kept aside in
DATA_DIR/rollback/ for a person, never merged and never dropped silently. No sockets here.

A master promoted from a slave says where it forked: `forked_from = [H, a]`, "I held writes
1..a of history H". A former master of H (or of the history before H, when a is at most where
H began: its sequence numbers run on across restarts) holds the writes past `a` that the new
master lacks. Each file is `<epoch>-<UTC time>.jsonl` (with `-2`, `-3`, ... when that name is
taken), one JSON object per line, one line per key (its last write):

    {"key": hex, "seq": int or null, "deleted": bool, "content_type": str or null,
     "encoding": str or null, "value": str or null, "value_encoding": "utf-8", "base64" or
     null, "exact": bool, "forked_at": a, "history": H}

The item is shown as the HTTP edge shows it (a UTF-8 value as text, any other in base64), so
a line's item fields can be sent back with PUT /set. `exact` false: the engine's logs no longer
reached back to `a`, so each key whose value differed from the new master's snapshot was kept
(it may be the new master's write, not ours); `seq` is then null.
"""
from __future__ import annotations

import base64
import json
import os
import time
from typing import Iterable, Optional

from yaddb.errors import BadRequest
from yaddb.item import check_blob, decode_item
from yaddb.durable import fsync_dir, write_atomically
from yaddb.replication.state import ReplicationState

ROLLBACK_DIR = "rollback"
SUFFIX = ".jsonl"

# (key, item blob or None for a delete, its sequence number or None when not known)
Write = tuple[bytes, Optional[bytes], Optional[int]]


def fork_point(forked_from: object, former: Optional[ReplicationState]) -> Optional[int]:
    """`a` of forked_from [H, a] when H is the former master's line of writes, else None."""
    if former is None or not isinstance(forked_from, (list, tuple)) or len(forked_from) != 2:
        return None
    history, seq = forked_from
    if not isinstance(history, str) or type(seq) is not int or seq < 0:
        return None
    return seq if former.continues(history, seq) else None


def last_writes(writes: Iterable[tuple[int, bytes, Optional[bytes]]]) -> list[Write]:
    """One write per key, its last, in the order they were made."""
    last: dict[bytes, Write] = {}
    for seq, key, value in writes:
        last.pop(key, None)  # re-inserted last, so the dict keeps the order of last writes
        last[key] = (key, value, seq)
    return list(last.values())


def differences(ours: list[tuple[bytes, bytes]], theirs: list[tuple[bytes, bytes]]) -> list[Write]:
    """In key order, each key whose item here is not the snapshot's: ours, or a delete where
    we lack a key it has. Both lists cover one key range, in key order."""
    snapshot = dict(theirs)
    here = dict(ours)
    changed = [(key, value, None) for key, value in ours if snapshot.get(key) != value]
    changed += [(key, None, None) for key in snapshot if key not in here]
    return sorted(changed, key=lambda write: write[0])


def render(write: Write, exact: bool, forked_at: int, history: str) -> dict:
    """One line of a rollback file, as a JSON object."""
    key, blob, seq = write
    return {"key": key.hex(), "seq": seq, "deleted": blob is None, **_item_fields(blob),
            "exact": exact, "forked_at": forked_at, "history": history}


def _item_fields(blob: Optional[bytes]) -> dict:
    if blob is None:
        return {"content_type": None, "encoding": None, "value": None, "value_encoding": None}
    try:
        content_type, encoding, value = decode_item(check_blob(blob, len(blob)))
    except BadRequest:  # not an item (never stored by a node): show the raw bytes
        content_type, encoding, value = None, None, blob
    try:
        return {"content_type": content_type, "encoding": encoding,
                "value": value.decode("utf-8"), "value_encoding": "utf-8"}
    except UnicodeDecodeError:
        return {"content_type": content_type, "encoding": encoding,
                "value": base64.b64encode(value).decode("ascii"), "value_encoding": "base64"}


def encode(writes: list[Write], exact: bool, forked_at: int, history: str) -> bytes:
    return "".join(json.dumps(render(write, exact, forked_at, history), ensure_ascii=False) + "\n"
                   for write in writes).encode("utf-8")


def write_file(data_dir: str, epoch: int, writes: list[Write], exact: bool, forked_at: int,
               history: str, now: Optional[float] = None) -> str:
    """Write the rollback file durably (temp file, fsync, rename, fsync the dir); its path."""
    directory = os.path.join(data_dir, ROLLBACK_DIR)
    if not os.path.isdir(directory):
        os.makedirs(directory, exist_ok=True)
        fsync_dir(data_dir)  # the new directory's entry, so the file cannot vanish with it
    path = _free_name(directory, epoch, time.time() if now is None else now)
    write_atomically(path, encode(writes, exact, forked_at, history))
    return path


def _free_name(directory: str, epoch: int, now: float) -> str:
    stem = f"{epoch}-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime(now))}"
    path, n = os.path.join(directory, stem + SUFFIX), 1
    while os.path.exists(path):  # several files in one second (one per snapshot chunk)
        n += 1
        path = os.path.join(directory, f"{stem}-{n}{SUFFIX}")
    return path


def count(data_dir: str) -> dict:
    """{"files": n, "entries": m}: what DATA_DIR/rollback holds, for stats."""
    directory = os.path.join(data_dir, ROLLBACK_DIR)
    try:
        names = [name for name in os.listdir(directory) if name.endswith(SUFFIX)]
    except FileNotFoundError:
        return {"files": 0, "entries": 0}
    entries = 0
    files = 0
    for name in names:
        try:
            with open(os.path.join(directory, name), "rb") as file:
                entries += sum(1 for line in file if line.strip())
            files += 1
        except FileNotFoundError:  # a person moved it away meanwhile
            continue
    return {"files": files, "entries": entries}
