"""`yaddb backup` and `yaddb restore` as an operator runs them, on real nodes.

The main test backs a master up while writers overwrite and delete keys on it, restores the
file, starts a node on the result and compares that node's whole content with the source as
of the backup's sequence number, rebuilt independently by replaying the master's write log
from its first write. The others check that a damaged backup restores nothing, that
restore never writes over data, and that a whole keyed cluster backs up by partition.
"""
import os
import random
import subprocess
import sys
import threading
import time

from tests.helpers import REPO_ROOT, child_env
from yaddb.backup.format import BackupReader
from yaddb.client import Client
from yaddb.transport.client_conn import Connection

KEY_SPACE = 400


def yaddb(*argv, env=None):
    return subprocess.run([sys.executable, "-m", "yaddb", *argv], cwd=REPO_ROOT,
                          env=env or child_env(), capture_output=True, timeout=120)


def one_line_failure(result, *words):
    assert result.returncode == 1, result
    message = result.stderr.decode()
    assert message.count("\n") == 1 and "Traceback" not in message, message
    for word in words:
        assert word in message, message


def node_stats(node):
    conn = Connection(node.endpoint, 10.0)
    try:
        return conn.call("stats", [])
    finally:
        conn.close()


def log_as_of(node, seq):
    """key -> stored bytes after writes 1..seq, replayed from the master's write log."""
    history = node_stats(node)["history"]
    conn = Connection(node.endpoint, 10.0)
    try:
        content, applied = {}, 0
        while applied < seq:
            answer = conn.call("sync", [history, applied, 1 << 20])
            assert answer["mode"] == "log", "the backlog no longer holds the first writes"
            for first, entries in answer["batches"]:
                for offset, (key, value) in enumerate(entries):
                    if first + offset <= seq:
                        content.pop(key, None) if value is None else content.__setitem__(key, value)
                applied = first + len(entries) - 1
        return content
    finally:
        conn.close()


def whole_content(node):
    """key -> stored bytes of everything `node` holds now (its snapshot, read in chunks)."""
    conn = Connection(node.endpoint, 10.0)
    try:
        chunk = answer = conn.call("sync", [None, 0, 1 << 20])
        content = {}
        while True:
            content.update((key, value) for key, value in chunk["items"])
            if chunk["done"]:
                return content
            chunk = conn.call("chunk", [answer["cursor"]])
    finally:
        conn.close()


def test_a_backup_under_writes_restores_the_content_as_of_its_sequence(tmp_path, processes):
    source = processes.node(tmp_path / "source", "--fsync", "never",
                            "--memtable-bytes", "65536").wait_ready()
    stop = threading.Event()
    written = [0]

    def write_load(seed):
        rng = random.Random(seed)
        with Client(source.endpoint, direct=False) as client:
            deadline = time.monotonic() + 60
            while not stop.is_set() and time.monotonic() < deadline:
                key = b"k%03d" % rng.randrange(KEY_SPACE)
                if rng.random() < 0.2:
                    client.delete(key)
                else:
                    client.set(key, b"%d-%d " % (seed, written[0]) + b"v" * rng.randrange(300))
                written[0] += 1

    writers = [threading.Thread(target=write_load, args=(seed,)) for seed in range(3)]
    for writer in writers:
        writer.start()
    try:
        deadline = time.monotonic() + 30
        while written[0] < 3000 and time.monotonic() < deadline:  # segments on disk, and a memtable
            time.sleep(0.05)
        backup = tmp_path / "source.yaddb-backup"
        taken = yaddb("backup", "--node", source.address, str(backup))
        assert taken.returncode == 0, taken.stderr
        before = written[0]
        deadline = time.monotonic() + 30
        while written[0] < before + 1000 and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        stop.set()
        for writer in writers:
            writer.join(60)
    with open(backup, "rb") as file:
        seq = BackupReader(file).header["seq"]
    final_seq = node_stats(source)["sequence"]
    assert 3000 <= seq < final_seq - 500, (seq, final_seq)  # the writes went on around it
    expected = log_as_of(source, seq)
    assert expected != whole_content(source)  # so "as of its sequence" is what is checked

    restored_dir = tmp_path / "restored"
    restored = yaddb("restore", str(backup), str(restored_dir))
    assert restored.returncode == 0, restored.stderr
    assert f"{len(expected)} items".encode() in restored.stdout
    node = processes.node(restored_dir).wait_ready()
    assert whole_content(node) == expected
    with Client(node.endpoint, direct=False) as client:  # and through the ordinary read path
        keys = [b"k%03d" % n for n in range(KEY_SPACE)]
        got = dict(zip(keys, client.mget(keys)))
    assert {key for key, item in got.items() if item is not None} == set(expected)
    assert all(item.value in expected[key] for key, item in got.items() if item is not None)


def test_a_damaged_backup_restores_nothing_and_restore_never_writes_over_data(tmp_path, processes):
    node = processes.node(tmp_path / "node", "--fsync", "never").wait_ready()
    with Client(node.endpoint, direct=False) as client:
        client.mset({b"key%d" % n: b"value %d" % n for n in range(500)})
    backup = tmp_path / "node.yaddb-backup"
    assert yaddb("backup", "--node", node.address, str(backup)).returncode == 0
    one_line_failure(yaddb("backup", "--node", node.address, str(backup)), "exists")
    data = backup.read_bytes()
    flipped = bytearray(data)
    flipped[len(data) // 2] ^= 0x40
    for name, damaged in (("cut", data[:-7]), ("flipped", bytes(flipped)),
                          ("stranger", b"not a backup at all")):
        path = tmp_path / f"{name}.yaddb-backup"
        path.write_bytes(damaged)
        one_line_failure(yaddb("restore", str(path), str(tmp_path / name)), str(path))
        assert not (tmp_path / name).exists()
        assert [n for n in os.listdir(tmp_path) if "restoring" in n] == []

    occupied = tmp_path / "occupied"
    occupied.mkdir()
    (occupied / "mine").write_bytes(b"precious")
    one_line_failure(yaddb("restore", str(backup), str(occupied)), "not empty")
    assert os.listdir(occupied) == ["mine"] and (occupied / "mine").read_bytes() == b"precious"

    restored = tmp_path / "restored"
    assert yaddb("restore", str(backup), str(restored)).returncode == 0
    assert whole_content(processes.node(restored).wait_ready()) == whole_content(node)


def test_a_keyed_cluster_backs_up_by_partition_and_a_slave_is_not_a_source(tmp_path, processes):
    router = processes.router(tmp_path / "data").wait_ready()
    keys = str(tmp_path / "data" / "keys")
    with Client(router.endpoint, keys=keys) as client:
        client.mset({b"item%d" % n: b"%d" % n for n in range(300)})
        masters = client.partition_map()["masters"]
        slaves = [s["address"] for p in client.stats()["partitions"] for s in p["slaves"]]
    out = tmp_path / "backup"
    keyless = yaddb("-e", router.endpoint, "backup", str(out / "keyless"))
    one_line_failure(keyless, "backup:")
    taken = yaddb("-e", router.endpoint, "--keys-dir", keys, "backup", str(out / "all"))
    assert taken.returncode == 0, taken.stderr
    files = sorted(os.listdir(out / "all"))
    assert files == [f"partition-{n}.yaddb-backup" for n in range(len(masters))]
    restored = {}
    for index, name in enumerate(files):
        with open(out / "all" / name, "rb") as file:
            reader = BackupReader(file)
            assert (reader.header["node"], reader.header["partition"]) == (masters[index], index)
            for chunk in reader.chunks():
                restored.update(chunk)
    assert sorted(restored) == sorted(b"item%d" % n for n in range(300))
    one_line_failure(yaddb("--keys-dir", keys, "backup", "--node", slaves[0],
                           str(out / "slave")), "slave", "master")

    # As README says: restore each partition into a new one-command cluster's data dir.
    for index, name in enumerate(files):
        assert yaddb("restore", str(out / "all" / name),
                     str(tmp_path / "data2" / f"partition-{index}")).returncode == 0
    router.close()
    second = processes.router(tmp_path / "data2").wait_ready()
    with Client(second.endpoint) as client:
        items = client.mget([b"item%d" % n for n in range(300)])
    assert [item and item.value for item in items] == [b"%d" % n for n in range(300)]
