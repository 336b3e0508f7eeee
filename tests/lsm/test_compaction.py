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
    assert pick_run([MB, MB, MB], MB, 3, 12) == (0, 3)
    assert pick_run([MB, MB, MB, MB], MB, 4, 12) == (0, 4)
    # Newest first: the four small ones sit above two big ones and merge among themselves.
    assert pick_run([MB, MB, MB, MB, 5 * MB, 5 * MB], MB, 4, 12) == (0, 4)
    assert pick_run([MB, 5 * MB, 5 * MB, 5 * MB, 5 * MB], MB, 4, 12) == (1, 5)


def test_pick_run_bounds_the_segment_count_by_merging_the_smallest_neighbours():
    sizes = [MB, 3 * MB, 9 * MB, 9 * MB, 27 * MB, 27 * MB, 81 * MB]
    assert pick_run(sizes, MB, 3, 12) is None
    assert pick_run(sizes, MB, 3, 6) == (0, 2)
    assert pick_run([9 * MB, MB, 2 * MB, 30 * MB], MB, 100, 3) == (1, 3)


def test_tiered_policy_keeps_segments_and_rewrites_bounded():
    segments: list[int] = []
    written = 0
    for _ in range(1000):  # a thousand flushes of one memtable each
        segments.insert(0, MB)
        written += MB
        while (run := pick_run(segments, MB, 3, 12)) is not None:
            merged = sum(segments[run[0]:run[1]])
            written += merged
            segments[run[0]:run[1]] = [merged]
        assert len(segments) <= 12
    assert written / (1000 * MB) < 10  # each byte rewritten about log3(1000) ~ 6 times
