"""A cluster's CURVE keys: `python3 -m yaddb keygen DIR` as a real process, pyzmq's certificate
format, secret files 0600, and a secret others may read refused with the file named."""
import os
import stat
import subprocess
import sys

import pytest
import zmq.auth

from yaddb.errors import SecurityError
from yaddb.transport.keys import check_private, load_client_pair, load_keys
from tests.helpers import REPO_ROOT, child_env


def keygen(directory, *flags):
    return subprocess.run([sys.executable, "-m", "yaddb", "keygen", str(directory), *flags],
                          cwd=REPO_ROOT, env=child_env(), capture_output=True, text=True,
                          timeout=60)


def test_keygen_writes_a_member_pair_and_client_pairs_only_their_owner_reads(tmp_path):
    result = keygen(tmp_path / "keys", "--clients", "2")
    assert result.returncode == 0, result.stderr
    names = sorted(os.listdir(tmp_path / "keys"))
    assert names == ["client-1.key", "client-1.key_secret", "client-2.key", "client-2.key_secret",
                     "member.key", "member.key_secret"]
    assert stat.S_IMODE(os.stat(tmp_path / "keys").st_mode) == 0o700
    for name in names:
        mode = stat.S_IMODE(os.stat(tmp_path / "keys" / name).st_mode)
        assert (mode == 0o600) if name.endswith("_secret") else not mode & 0o022, (name, oct(mode))
    keys = load_keys(str(tmp_path / "keys"))
    public, secret = zmq.auth.load_certificate(str(tmp_path / "keys" / "member.key_secret"))
    assert (keys.member_public, keys.member_secret) == (public, secret) and len(secret) == 40
    assert sorted(keys.clients) == ["client-1", "client-2"]
    assert len(set(keys.clients.values()) | {keys.member_public}) == 3  # all different


def test_keygen_never_replaces_a_clusters_keys(tmp_path):
    assert keygen(tmp_path / "keys").returncode == 0
    before = (tmp_path / "keys" / "member.key_secret").read_bytes()
    again = keygen(tmp_path / "keys")
    assert again.returncode == 1 and "already holds keys" in again.stderr
    assert (tmp_path / "keys" / "member.key_secret").read_bytes() == before


def test_a_secret_others_may_read_is_refused_with_its_name(tmp_path):
    assert keygen(tmp_path / "keys").returncode == 0
    secret = tmp_path / "keys" / "member.key_secret"
    os.chmod(secret, 0o644)
    with pytest.raises(SecurityError, match=r"member\.key_secret may be read by others.*chmod 600"):
        load_keys(str(tmp_path / "keys"))
    os.chmod(secret, 0o600)
    check_private(str(secret))  # fine again
    client_secret = tmp_path / "keys" / "client-1.key_secret"
    os.chmod(client_secret, 0o640)
    with pytest.raises(SecurityError, match="client-1.key_secret"):
        load_client_pair(str(tmp_path / "keys"))


def test_a_client_folder_needs_its_pair_and_the_member_public_key(tmp_path):
    assert keygen(tmp_path / "keys").returncode == 0
    client = tmp_path / "client"
    client.mkdir()
    with pytest.raises(SecurityError, match="no client key"):
        load_client_pair(str(client))
    for name in ("client-1.key", "client-1.key_secret", "member.key"):
        (client / name).write_bytes((tmp_path / "keys" / name).read_bytes())
    os.chmod(client / "client-1.key_secret", 0o600)
    public, secret, server = load_client_pair(str(client))
    assert server == load_keys(str(tmp_path / "keys")).member_public
    assert public == load_keys(str(tmp_path / "keys")).clients["client-1"] and len(secret) == 40
