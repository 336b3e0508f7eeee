"""The engine against a plain dict, through random writes, flushes, compactions and reopens."""
import shutil
import tempfile

from hypothesis import settings, strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from yaddb.lsm import Engine

keys = st.sampled_from([b"k%02d" % i for i in range(24)]) | st.binary(min_size=1, max_size=12)
values = st.binary(max_size=64)


class EngineMatchesDict(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.directory = tempfile.mkdtemp(prefix="yaddb-model-")
        self.model: dict[bytes, bytes] = {}
        self.engine = self._open()

    def _open(self) -> Engine:
        # A tiny memtable makes flushes happen within a few dozen steps; with max_segments=3
        # the newest segments merge without the oldest, where tombstones must be kept.
        return Engine(self.directory, fsync="never", memtable_bytes=512, block_bytes=128,
                      compaction="thread", compaction_fanout=8, max_segments=3)

    @rule(key=keys, value=values)
    def put(self, key, value):
        self.engine.put(key, value)
        self.model[key] = value

    @rule(key=keys)
    def delete(self, key):
        self.engine.delete(key)
        self.model.pop(key, None)

    @rule(ops=st.lists(st.tuples(keys, st.none() | values), max_size=8))
    def batch(self, ops):
        self.engine.write_batch(ops)
        for key, value in ops:
            if value is None:
                self.model.pop(key, None)
            else:
                self.model[key] = value

    @rule()
    def flush(self):
        self.engine.flush()

    @rule()
    def compact(self):
        self.engine.compact()

    @rule()
    def wait_for_background_work(self):
        self.engine.wait_for_compactions()

    @rule()
    def reopen(self):
        sequence = self.engine.sequence
        self.engine.close()
        self.engine = self._open()
        assert self.engine.sequence == sequence

    @precondition(lambda self: self.model)
    @rule(data=st.data())
    def get_present(self, data):
        key = data.draw(st.sampled_from(sorted(self.model)))
        assert self.engine.get(key) == self.model[key]

    @rule(key=keys)
    def get_any(self, key):
        assert self.engine.get(key) == self.model.get(key)

    @rule(start=keys, stop=keys)
    def scan_a_range(self, start, stop):
        expected = sorted((k, v) for k, v in self.model.items() if start <= k < stop)
        assert list(self.engine.items(start, stop)) == expected

    @invariant()
    def whole_content_matches(self):
        assert dict(self.engine.items()) == self.model

    def teardown(self):
        self.engine.close()
        shutil.rmtree(self.directory, ignore_errors=True)


EngineMatchesDict.TestCase.settings = settings(max_examples=60, stateful_step_count=60, deadline=None)
TestEngineMatchesDict = EngineMatchesDict.TestCase
