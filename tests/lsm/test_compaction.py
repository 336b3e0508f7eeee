from yaddb.lsm.compaction import merge, pick_run

MB = 1 << 20


def test_merge_keeps_the_newest_version_and_drops_tombstones_only_when_asked():
    newest = [(b"a", b"new"), (b"c", None)]
    oldest = [(b"a", b"old"), (b"b", b"kept"), (b"c", b"gone")]
    assert list(merge([newest, oldest], drop_tombstones=False)) == [
        (b"a", b"new"), (b"b", b"kept"), (b"c", None)]
    assert list(merge([newest, oldest], drop_tombstones=True)) == [(b"a", b"new"), (b"b", b"kept")]


def test_pick_run_merges_a_full_tier_of_adjacent_segments():
    assert pick_run([MB, MB, MB], MB, 4, 12) is None
    assert pick_run([MB, MB, MB, MB], MB, 4, 12) == (0, 4)
    # Newest first: the four small ones sit above two big ones and merge among themselves.
    assert pick_run([MB, MB, MB, MB, 5 * MB, 5 * MB], MB, 4, 12) == (0, 4)
    assert pick_run([MB, 5 * MB, 5 * MB, 5 * MB, 5 * MB], MB, 4, 12) == (1, 5)


def test_pick_run_bounds_the_segment_count():
    sizes = sorted(MB * 4 ** tier for tier in range(8) for _ in range(3))
    run = pick_run(sizes, MB, 4, 12)
    assert run is not None and run[0] == 0 and len(sizes) - (run[1] - run[0]) + 1 <= 12
