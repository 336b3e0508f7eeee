from hypothesis import given, strategies as st

from yaddb.lsm.memtable import MISSING, Memtable

keys = st.binary(min_size=1, max_size=8)
values = st.one_of(st.none(), st.binary(max_size=16))


@given(st.lists(st.tuples(keys, values), max_size=300))
def test_memtable_matches_a_dict_and_stays_a_red_black_tree(ops):
    table = Memtable()
    model = {}
    for seq, (key, value) in enumerate(ops, start=1):
        table.put(key, value, seq)
        model[key] = value
    table.check_invariants()
    assert list(table.items()) == sorted(model.items())
    assert table.columns() == ([k for k, _ in sorted(model.items())], [v for _, v in sorted(model.items())])
    for key, value in model.items():
        assert table.get(key) == value
    assert len(table) == len(model)
    assert table.last_seq == len(ops)


def test_absent_key_is_missing_and_tombstone_is_none():
    table = Memtable()
    table.put(b"a", None, 1)
    assert table.get(b"a") is None
    assert table.get(b"b") is MISSING


def test_sorted_inserts_keep_the_tree_balanced():
    table = Memtable()
    for i in range(4096):
        table.put(i.to_bytes(4, "big"), b"", i + 1)
    # A red-black tree of n nodes has black height >= log2(n + 1) / 2; a degenerate list would fail.
    assert table.check_invariants() <= 13


def test_size_accounting_follows_overwrites():
    table = Memtable()
    table.put(b"k", b"x" * 100, 1)
    first = table.approx_bytes
    table.put(b"k", b"x" * 10, 2)
    assert table.approx_bytes == first - 90
    table.put(b"k", None, 3)
    assert table.approx_bytes == first - 100
