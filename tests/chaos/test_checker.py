"""The chaos checker on synthetic histories, no processes: each rule passes what it must and
fails what it must, and says so in words a person can act on."""
from __future__ import annotations

import threading

import pytest

from yaddb.errors import NotMaster, Unavailable, YaddbTimeout
from yaddb.transport.client_conn import NotSent
from tests.chaos.checker import (check, check_final_state, check_reads, check_replicas,
                                 report)
from tests.chaos.history import (DELETE, FAIL, INFO, OK, READ, WRITE, Event, History, Op,
                                 outcome_of)

K, L = b"k", b"l"


def w(value: bytes, start: float, end: float, result: str = OK, key: bytes = K,
      concern: str | None = None) -> Op:
    return Op("c1", WRITE, key, value, start, end, result, w=concern)


def d(start: float, end: float, result: str = OK, key: bytes = K) -> Op:
    return Op("c2", DELETE, key, None, start, end, result)


def r(value: bytes | None, start: float, end: float, key: bytes = K) -> Op:
    return Op("c3", READ, key, value, start, end, OK)


def final_ok(ops, state) -> bool:
    return check_final_state(ops, state) == []


# -- the final-state rule -----------------------------------------------------------------------

def test_an_empty_history_allows_only_an_empty_store():
    assert final_ok([], {})
    [violation] = check_final_state([], {K: b"ghost"})
    assert "never written" in violation.what


def test_an_acknowledged_write_must_be_there():
    ops = [w(b"a", 1, 2)]
    assert final_ok(ops, {K: b"a"})
    [violation] = check_final_state(ops, {})
    assert violation.key == K and "absent" in violation.what and violation.ops == (ops[0],)


def test_of_two_writes_in_sequence_the_later_wins():
    ops = [w(b"a", 1, 2), w(b"b", 3, 4)]
    assert final_ok(ops, {K: b"b"})
    [violation] = check_final_state(ops, {K: b"a"})
    assert "overwritten value came back" in violation.what
    assert violation.ops[:2] == (ops[0], ops[1])  # the stale write, then the one after it


def test_concurrent_writes_may_end_in_either_order():
    ops = [w(b"a", 1, 3), w(b"b", 2, 4)]
    assert final_ok(ops, {K: b"a"}) and final_ok(ops, {K: b"b"})
    assert not final_ok(ops, {})


def test_a_deleted_key_never_comes_back():
    ops = [w(b"a", 1, 2), d(3, 4)]
    assert final_ok(ops, {})
    [violation] = check_final_state(ops, {K: b"a"})
    assert "deleted key came back" in violation.what


def test_a_write_after_a_delete_must_be_there():
    ops = [w(b"a", 1, 2), d(3, 4), w(b"b", 5, 6)]
    assert final_ok(ops, {K: b"b"})
    assert not final_ok(ops, {}) and not final_ok(ops, {K: b"a"})


def test_an_unknown_write_may_land_even_after_a_later_acknowledged_one():
    """A timed-out request may still be applied after the client gave up."""
    ops = [w(b"a", 1, 2, result=INFO), w(b"b", 3, 4)]
    assert final_ok(ops, {K: b"a"}) and final_ok(ops, {K: b"b"})
    assert not final_ok(ops, {})


def test_only_acknowledged_mutations_push_earlier_ones_out():
    ops = [w(b"a", 1, 2), w(b"b", 3, 4, result=INFO), w(b"c", 5, 6, result=FAIL)]
    assert final_ok(ops, {K: b"a"}) and final_ok(ops, {K: b"b"})
    assert not final_ok(ops, {K: b"c"}) and not final_ok(ops, {})


def test_an_unknown_delete_may_or_may_not_have_happened():
    ops = [w(b"a", 1, 2), d(3, 4, result=INFO)]
    assert final_ok(ops, {}) and final_ok(ops, {K: b"a"})


def test_only_unknown_writes_allow_the_initial_absence_too():
    ops = [w(b"a", 1, 2, result=INFO)]
    assert final_ok(ops, {}) and final_ok(ops, {K: b"a"})


def test_a_failed_write_is_never_applied():
    ops = [w(b"a", 1, 2, result=FAIL)]
    assert final_ok(ops, {})
    [violation] = check_final_state(ops, {K: b"a"})
    assert "failed" in violation.what


def test_a_value_written_to_another_key_does_not_explain_this_one():
    ops = [w(b"a", 1, 2, key=L)]
    assert final_ok(ops, {L: b"a"})
    assert not final_ok(ops, {K: b"a", L: b"a"})


def test_a_rolled_back_w1_write_is_excused_but_a_majority_write_is_not():
    lost = w(b"b", 3, 4)
    assert not final_ok([w(b"a", 1, 2), lost], {K: b"a"})
    assert check_final_state([w(b"a", 1, 2), lost], {K: b"a"}, frozenset({(K, b"b")})) == []
    strong = w(b"b", 3, 4, concern="majority")
    [violation] = check_final_state([w(b"a", 1, 2), strong], {K: b"a"}, frozenset({(K, b"b")}))
    assert "w=majority was rolled back" in violation.what


def test_a_rolled_back_write_that_is_still_there_is_reported():
    [violation] = check_final_state([w(b"a", 1, 2)], {K: b"a"}, frozenset({(K, b"a")}))
    assert "rollback" in violation.what


# -- reads --------------------------------------------------------------------------------------

def test_reads_may_be_stale_or_see_a_write_in_progress():
    ops = [w(b"a", 1, 2), w(b"b", 3, 4), r(b"a", 5, 6), r(b"b", 3.5, 3.6), r(None, 7, 8)]
    assert check_reads(ops) == []


def test_a_read_of_a_value_never_written_fails():
    [violation] = check_reads([r(b"x", 1, 2)])
    assert violation.rule == "reads" and "never written" in violation.what


def test_a_read_of_another_keys_value_fails_and_names_that_key():
    [violation] = check_reads([w(b"a", 1, 2, key=L), r(b"a", 3, 4)])
    assert "written to key l" in violation.what


def test_a_read_from_the_future_fails():
    [violation] = check_reads([r(b"a", 1, 2), w(b"a", 3, 4)])
    assert "began after the read ended" in violation.what


def test_a_read_of_a_failed_write_fails():
    [violation] = check_reads([w(b"a", 1, 2, result=FAIL), r(b"a", 3, 4)])
    assert "failed" in violation.what


# -- replicas and the whole run -----------------------------------------------------------------

def test_a_slave_must_equal_its_master_key_by_key():
    finals = {"m": {K: b"a", L: b"b"}, "s1": {K: b"a", L: b"b"}, "s2": {K: b"a"}}
    assert check_replicas("m", ["s1"], finals) == []
    [violation] = check_replicas("m", ["s1", "s2"], finals)
    assert violation.key == L and "s2 holds (absent)" in violation.what
    finals["s1"] = {K: b"a", L: b"b", b"extra": b"x"}
    assert [v.key for v in check_replicas("m", ["s1"], finals)] == [b"extra"]


def test_check_runs_every_rule_on_the_masters_content():
    ops = [w(b"a", 1, 2), r(b"zz", 3, 4)]
    finals = {"m": {K: b"a"}, "s": {}}
    rules = sorted(v.rule for v in check(ops, finals, [("m", ["s"])]))
    assert rules == ["reads", "replicas"]
    assert [v.rule for v in check(ops, {"m": {}, "s": {}}, [("m", ["s"])])] == \
        ["final state", "reads"]
    with pytest.raises(NotImplementedError):
        check(ops, finals, [("m", ["s"])], role_samples=[])


def test_the_report_names_the_key_the_operations_their_times_and_the_nemesis():
    ops = [w(b"a", 101, 102), d(103, 104)]
    text = report(check_final_state(ops, {K: b"a"}), t0=100,
                  events=[Event(102.5, "SIGKILL master"), Event(150, "far away")])
    assert "deleted key came back" in text and "key k" in text
    assert "[   1.000 ..    2.000] c1   write a key k: ok" in text
    assert "[   3.000 ..    4.000] c2   delete key k: ok" in text
    assert "SIGKILL master" in text and "far away" not in text


# -- the history ----------------------------------------------------------------------------------

@pytest.mark.parametrize("error, outcome", [
    (NotSent("no connection"), FAIL), (NotMaster("a slave"), FAIL),
    (YaddbTimeout("no reply"), INFO), (Unavailable("master did not answer"), INFO)])
def test_errors_are_failures_only_when_nothing_was_applied(error, outcome):
    assert outcome_of(error) == outcome


def test_the_history_records_results_errors_and_values_from_many_threads():
    history = History()

    def client(n: int) -> None:
        for i in range(200):
            history.run(f"c{n}", WRITE, K, b"%d-%d" % (n, i), lambda: None)
    threads = [threading.Thread(target=client, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(history.ops) == 800 and len({op.value for op in history.ops}) == 800

    def times_out():
        raise YaddbTimeout("no reply")
    op = history.run("c9", WRITE, K, b"v", times_out)
    assert (op.result, op.value, op.error) == (INFO, b"v", "YaddbTimeout: no reply")
    read = history.run("c9", READ, K, None, lambda: b"seen")
    assert (read.result, read.value) == (OK, b"seen")
    with pytest.raises(ZeroDivisionError):
        history.run("c9", DELETE, K, None, lambda: 1 / 0)
    assert history.ops[-1].result == INFO  # a test bug still leaves its trace
    assert history.counts()["write ok"] == 800
