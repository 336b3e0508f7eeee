import pytest

from yaddb.lsm import Engine


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
