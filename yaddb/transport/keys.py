"""A cluster's CURVE keys on disk, in pyzmq's certificate format (zmq.auth), one folder each:

    member.key, member.key_secret        the members' pair (every node and router)
    client-N.key, client-N.key_secret    client pairs; a client machine needs its own pair
                                         and member.key (the servers' public key)

Secret files are created 0600 and refused when others may read them: whoever reads the
member secret is a member (CONTRACT.md section 8).
"""
from __future__ import annotations

import glob
import os
import stat
import tempfile
from dataclasses import dataclass

import zmq
import zmq.auth

from yaddb.errors import SecurityError

MEMBER = "member"
CLIENT_PREFIX = "client-"


@dataclass(frozen=True)
class ClusterKeys:
    directory: str
    member_public: bytes
    member_secret: bytes
    clients: dict[str, bytes]  # name (client-N) -> public key


def require_curve() -> None:
    """CURVE needs a libzmq built with libsodium or its own tweetnacl; say so if it is not."""
    if not zmq.has("curve"):
        raise SecurityError(f"this libzmq ({zmq.zmq_version()}) has no CURVE security; install "
                        f"pyzmq's wheel (it bundles a libzmq with CURVE) or a libzmq built "
                        f"with libsodium")


def make_keys(directory: str, clients: int = 1) -> list[str]:
    """Write a member pair and `clients` client pairs into `directory` (created 0700 if
    absent); refuses to replace keys already there. Returns the files written."""
    require_curve()
    if clients < 1:
        raise SecurityError("make at least one client pair")
    os.makedirs(directory, mode=0o700, exist_ok=True)
    names = [MEMBER] + [f"{CLIENT_PREFIX}{n}" for n in range(1, clients + 1)]
    taken = [name for name in names if os.path.exists(os.path.join(directory, name + ".key"))]
    if taken:
        raise SecurityError(f"{directory} already holds keys ({', '.join(taken)}); a cluster's "
                        f"keys are not replaced by accident: remove them first, or use "
                        f"another folder")
    written = []
    # Made in a private temporary folder, closed to others before they are moved in, so a
    # secret is never readable by anyone else, not even for a moment.
    with tempfile.TemporaryDirectory(dir=directory) as private:
        for name in names:
            public, secret = zmq.auth.create_certificates(private, name)
            os.chmod(secret, 0o600)
            for path in (public, secret):
                target = os.path.join(directory, os.path.basename(path))
                os.replace(path, target)
                written.append(target)
    return written


def load_keys(directory: str) -> ClusterKeys:
    """The member pair and every client's public key in `directory`."""
    require_curve()
    member = os.path.join(directory, MEMBER + ".key_secret")
    public, secret = _load(member)
    if secret is None:
        raise SecurityError(f"{member} holds no secret key")
    clients = {}
    for path in sorted(glob.glob(os.path.join(directory, CLIENT_PREFIX + "*.key"))):
        clients[os.path.basename(path)[:-len(".key")]] = _load(path)[0]
    return ClusterKeys(directory, public, secret, clients)


def load_client_pair(directory: str) -> tuple[bytes, bytes, bytes]:
    """(client public, client secret, server public) from a client's folder: its own
    client-*.key_secret and the cluster's member.key."""
    secrets = sorted(glob.glob(os.path.join(directory, CLIENT_PREFIX + "*.key_secret")))
    if not secrets:
        raise SecurityError(f"no client key (client-*.key_secret) in {directory}; make one with "
                        f"`python3 -m yaddb keygen DIR` and copy it there with member.key")
    public, secret = _load(secrets[0])
    server_public = _load(os.path.join(directory, MEMBER + ".key"))[0]
    return public, secret, server_public


def _load(path: str) -> tuple[bytes, "bytes | None"]:
    if path.endswith("_secret"):
        check_private(path)
    try:
        return zmq.auth.load_certificate(path)
    except (OSError, ValueError) as exc:
        raise SecurityError(f"cannot read the key file {path}: {exc}") from None


def check_private(path: str) -> None:
    """Refuse a secret key file that anyone but its owner may read or write."""
    try:
        mode = os.stat(path).st_mode
    except OSError as exc:
        raise SecurityError(f"cannot read the key file {path}: {exc}") from None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise SecurityError(f"the secret key file {path} may be read by others (mode "
                        f"{stat.S_IMODE(mode):04o}); whoever reads it can act as its owner. "
                        f"Run: chmod 600 {path}")
