"""The write-ahead log is zero-filled ahead of its records (wal.py), so that an fdatasync
flushes records alone, not the file's size; recovery reads such a log to its last record."""
import os

from yaddb.lsm import Engine, wal, wal_format
from yaddb.lsm.wal import PREALLOCATE_BYTES, WalWriter


def test_a_log_grows_in_zero_filled_steps_and_reads_back_whole(tmp_path):
    path = str(tmp_path / "wal-000001.log")
    writer = WalWriter(path, 1)
    records = [wal_format.encode_single(seq, b"key%d" % seq, b"v" * 300) for seq in range(1, 2000)]
    sizes = set()
    for record in records:
        end = writer.append(record)
        assert os.path.getsize(path) > end  # zeros ahead of the last record
        sizes.add(os.path.getsize(path))
    writer.sync()
    writer.close(sync=True)
    data = (tmp_path / "wal-000001.log").read_bytes()
    total = sum(map(len, records))
    assert len(sizes) <= total // PREALLOCATE_BYTES + 1  # it grew in steps, not per record
    assert data[total:] == bytes(len(data) - total)
    scan = wal_format.scan(data)
    assert (scan.damage, scan.valid_bytes, len(scan.batches)) == (None, total, len(records))
    assert wal.recover(path)[-1].first_seq == len(records)
    assert os.path.getsize(path) == len(data)  # a clean end is not a torn tail: nothing cut

    reopened = WalWriter(path, 1)  # goes on after the last record, over the zeros
    assert reopened.written == total
    reopened.append(wal_format.encode_single(5000, b"after", b"x"))
    reopened.close(sync=True)
    assert [b.first_seq for b in wal.recover(path)][-2:] == [len(records), 5000]


def test_an_engine_recovers_from_a_zero_filled_log_after_a_crash(tmp_path):
    directory = str(tmp_path / "db")
    engine = Engine(directory, fsync="always", compaction="manual")
    for i in range(300):
        engine.put(b"k%03d" % i, b"v%d" % i)
    engine.delete(b"k007")
    (log_name,) = [n for n in os.listdir(directory) if n.startswith("wal-")]
    with open(os.path.join(directory, log_name), "rb") as file:
        data = file.read()
    assert data.endswith(bytes(1000))
    # As after kill -9: the files as they are, opened by a new engine.
    crashed = str(tmp_path / "crashed")
    os.mkdir(crashed)
    for name in os.listdir(directory):
        if name != "LOCK":
            with open(os.path.join(directory, name), "rb") as source, \
                    open(os.path.join(crashed, name), "wb") as copy:
                copy.write(source.read())
    engine.close()
    with Engine(crashed, compaction="manual") as recovered:
        assert recovered.get(b"k299") == b"v299" and recovered.get(b"k007") is None
        assert recovered.sequence == 301
        assert len(list(recovered.items())) == 299
