import os

import pytest

from yaddb.lsm import Engine, files, wal_format
from tests.helpers import wait_for
from tests.lsm.corruption import BASE, RECORDS, WalImage, sequence_after


@pytest.fixture
def open_engine(tmp_path):
    """open_engine(**options) opens an Engine in a fresh directory; all are closed afterwards."""
    engines = []

    def opener(path=None, **options):
        options.setdefault("compaction", "thread")
        engine = Engine(str(path or tmp_path / "db"), **options)
        engines.append(engine)
        return engine

    yield opener
    for engine in engines:
        engine.close()


@pytest.fixture(scope="module")
def wal_image(tmp_path_factory) -> WalImage:
    source = tmp_path_factory.mktemp("wal-source")
    engine = Engine(str(source), fsync="always", compaction="manual")
    try:
        engine.write_batch(list(BASE.items()))
        engine.flush()
        # The flushed log is deleted just after the flush is installed.
        wait_for(lambda: len([n for n in os.listdir(source) if n.startswith("wal-")]) == 1,
                 "the flushed log to be deleted")
        for record in RECORDS:
            if len(record) > 1:
                engine.write_batch(record)
            elif record[0][1] is None:
                engine.delete(record[0][0])
            else:
                engine.put(*record[0])
        assert engine.sequence == sequence_after(len(RECORDS))
        image = {name: (source / name).read_bytes() for name in os.listdir(source)
                 if name != files.LOCK}
    finally:
        engine.close()
    (wal_name,) = [name for name in image if name.startswith("wal-")]
    made = WalImage(image, wal_name)
    scanned = wal_format.scan(made.wal)
    assert scanned.damage is None and [b.entries for b in scanned.batches] == RECORDS
    assert len(made.bounds) == len(RECORDS) + 1
    return made

