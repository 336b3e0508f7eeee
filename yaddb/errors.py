"""The one exception tree of YADDB; every error says what was wrong and what to do."""
from __future__ import annotations


class YaddbError(Exception):
    """Root of every error YADDB raises on purpose."""

    http_status = 500


class BadRequest(YaddbError, ValueError):
    """The caller sent something we refuse."""

    http_status = 400


class InvalidKey(BadRequest):
    """A key that is empty, too long or not bytes."""


class ValueTooLarge(BadRequest):
    """A value over the configured size limit."""

    http_status = 413


class NotMaster(YaddbError):
    """A write (or subscribe) was sent to a node that is not a partition master."""

    http_status = 418


class Unavailable(YaddbError):
    """No node that could answer did so."""

    http_status = 503


class NotApplied(Unavailable):
    """Refused before anything was applied (no master reachable, a lease run out, too few
    slaves): safe to send again."""


class YaddbTimeout(Unavailable, TimeoutError):
    """No reply came within the timeout."""


class ReplicationTimeout(Unavailable):
    """A write applied and durable on its master, but not confirmed by as many members as its
    write concern asked for within the replication timeout. It is not undone."""


class StaleEpoch(YaddbError):
    """A control message from an older configuration than the node has seen."""

    http_status = 409


class SecurityError(YaddbError):
    """Keys missing, unreadable or open to others, or a libzmq without CURVE."""


class NotPermitted(SecurityError):
    """An authenticated peer asked for an operation its key's role may not use."""

    http_status = 403


class BadMessage(YaddbError):
    """Frames that do not decode as a YADDB message."""

    http_status = 400
    request_id: "int | None" = None  # set when the id could be read, so the error reply matches


class StorageError(YaddbError):
    """The storage engine cannot do what was asked."""


class CorruptionError(StorageError):
    """A file on disk fails its checksum or format check."""

    def __init__(self, path: str, offset: int | None, what: str) -> None:
        where = f"{path}" if offset is None else f"{path} at byte {offset}"
        super().__init__(
            f"corrupt data in {where}: {what}. The engine refuses to serve it; restore "
            f"the file from a replica or backup, or move it aside to drop its contents."
        )
        self.path = path
        self.offset = offset


class DataDirLocked(StorageError):
    """Another process already has the data directory open."""


class EngineClosed(StorageError):
    """The engine was closed, or stopped after a fatal I/O error."""


class BadBackup(YaddbError):
    """A backup file that is not one, is cut short or fails its checksums."""
