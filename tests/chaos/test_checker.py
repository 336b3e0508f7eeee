"""The chaos checker on synthetic histories, no processes: each rule passes what it must and
fails what it must, and says so in words a person can act on."""
from __future__ import annotations

import threading

import pytest

from yaddb.errors import NotMaster, Unavailable, YaddbTimeout
from yaddb.transport.client_conn import NotSent
from tests.chaos.checker import (check, check_final_state, check_reads, check_replicas,
                                 check_rollbacks, report)
from tests.chaos.history import (DELETE, FAIL, INFO, OK, READ, WRITE, Event, History, Op,
                                 outcome_of)
from tests.chaos.rollback import RollbackFileError, pairs, read_rollbacks
from tests.chaos.synthetic import K, L, d, r, sample, w

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


def test_a_w1_write_lost_by_a_failover_must_be_in_a_rollback_file(tmp_path):
    """The loader and the rule together: without the old master's rollback file the lost
    write is a violation; with it, it is excused; a majority write is never excused."""
    ops = [w(b"a", 1, 2), w(b"b", 3, 4), w(b"c", 3.5, 4.5, key=L, concern="majority"),
           d(3, 3.2, key=b"m")]
    finals = {"n1": {K: b"a", b"m": b"gone"}, "n2": {K: b"a", b"m": b"gone"}}
    ops.append(w(b"gone", 0, 0.5, key=b"m"))
    layout = [("n2", ["n1"])]
    assert [v.key for v in check(ops, finals, layout)] == [K, L, b"m"]
    write_rollback(tmp_path / "n1", "2-100.jsonl", [
        {"key": K.hex(), "seq": 7, "deleted": False, "content_type": "text/plain",
         "encoding": "utf-8", "value": "b", "exact": True},
        {"key": b"m".hex(), "seq": 8, "deleted": True, "exact": True}])
    write_rollback(tmp_path / "n1", "3-200.jsonl", [
        {"key": L.hex(), "seq": 9, "deleted": False, "content_type": "", "encoding": "",
         "value": "Yw==", "value_encoding": "base64", "exact": False}])
    entries = read_rollbacks({"n1": tmp_path / "n1", "n2": tmp_path / "n2"})
    assert [(e.node, e.seq, e.exact) for e in entries] == [("n1", 7, True), ("n1", 8, True),
                                                            ("n1", 9, False)]
    assert pairs(entries) == {(K, b"b"), (b"m", None), (L, b"c")}
    [violation] = check(ops, finals, layout, rolled_back=pairs(entries))
    assert violation.key == L and "w=majority was rolled back" in violation.what


def test_a_w1_write_replaced_by_a_rolled_back_one_need_not_be_there_either():
    """A rollback file keeps each key's last write: an earlier w=1 write past the fork was
    replaced by it on the old master, so it may be gone too; a majority write may not."""
    ops = [w(b"a", 1, 2), w(b"b", 3, 4), w(b"c", 5, 6)]
    assert check_final_state(ops, {K: b"a"}, {(K, b"c")}) == []
    assert check_final_state(ops, {K: b"b"}, {(K, b"c")}) == []
    strong = [w(b"a", 1, 2), w(b"s", 2.5, 2.8, concern="majority"), w(b"b", 3, 4),
              w(b"c", 5, 6)]
    assert check_final_state(strong, {K: b"s"}, {(K, b"c")}) == []
    [violation] = check_final_state(strong, {K: b"a"}, {(K, b"c")})
    assert "overwritten value came back" in violation.what
    # A write that began after the rolled-back one ended is no business of the rollback.
    later = ops + [w(b"d", 7, 8)]
    assert check_final_state(later, {K: b"d"}, {(K, b"c")}) == []
    assert len(check_final_state(later, {K: b"a"}, {(K, b"c")})) == 1


def test_a_rolled_back_delete_is_one_of_the_keys_deletes_not_all_of_them():
    ops = [w(b"a", 1, 2), d(3, 4), w(b"b", 5, 6, concern="majority"), d(7, 8)]
    assert not final_ok(ops, {K: b"b"})
    assert check_final_state(ops, {K: b"b"}, {(K, None)}) == []  # the last delete rolled back
    assert check_final_state(ops, {}, {(K, None)}) == []  # or the first one
    [violation] = check_final_state(ops, {K: b"a"}, {(K, None)})  # neither brings "a" back
    assert "overwritten value came back" in violation.what
    strong = [w(b"a", 1, 2), Op("c2", DELETE, K, None, 3, 4, OK, w="majority")]
    rolled, came_back = check_final_state(strong, {K: b"a"}, {(K, None)})
    assert "delete with w=majority was rolled back" in rolled.what
    assert "deleted key came back" in came_back.what


def test_a_rolled_back_delete_began_before_its_node_stepped_down():
    """The rollback file's epoch and the role samples bound which delete it can have been:
    one that began before the node first said it had that epoch."""
    from tests.chaos.rollback import RolledBack
    ops = [w(b"a", 1, 2), d(3, 4), w(b"b", 5, 6, concern="majority"), d(7, 8)]
    entry = RolledBack("n1", "n1/rollback/2-x.jsonl", 1, K, None, 9, True, epoch=2)
    assert check_final_state(ops, {K: b"b"}, [entry]) == []  # d(7, 8) may be it
    samples = [sample("n1", 0, 0.1, epoch=1), sample("n1", 6.4, 6.5, role="slave", epoch=2)]
    [violation] = check_final_state(ops, {K: b"b"}, [entry], samples)  # it cannot: only d(3, 4)
    assert "came back" in violation.what or "absent" in violation.what
    assert check_final_state(ops, {}, [entry], samples) == []


def test_with_many_deletes_to_choose_from_the_latest_and_the_earliest_are_tried():
    ops = [w(b"s", 0, 1, concern="majority")]
    ops += [d(10 + i, 10.5 + i) for i in range(60)]  # 60 x 60 pairs: past MAX_DELETE_CHOICES
    ops += [w(b"c3", 100, 100.5, concern="majority"), d(101, 101.5), w(b"c1", 102, 102.5),
            d(103, 103.5)]
    two = [(K, None), (K, None)]  # two rolled-back deletes of the key (two failovers)
    assert check_final_state(ops, {}, two) == []          # the earliest deletes rolled back
    assert check_final_state(ops, {K: b"c3"}, two) == []  # the latest ones
    [violation] = check_final_state(ops, {K: b"s"}, two)
    assert "overwritten value came back" in violation.what


def test_an_inexact_rolled_back_delete_may_be_no_delete_at_all(tmp_path):
    write_rollback(tmp_path, "1-x.jsonl", [
        {"key": K.hex(), "seq": None, "deleted": True, "exact": False},
        {"key": L.hex(), "seq": None, "deleted": False, "content_type": "t", "encoding": "e",
         "value": "l1", "value_encoding": "utf-8", "exact": False}])
    entries = read_rollbacks({"n1": tmp_path})
    ops = [w(b"a", 1, 2), w(b"l1", 1, 2, key=L), w(b"l2", 3, 4, key=L)]
    assert check(ops, {"m": {K: b"a", L: b"l2"}}, [("m", [])], rolled_back=entries) == []
    exact = [{"key": K.hex(), "seq": 3, "deleted": True, "exact": True}]
    write_rollback(tmp_path / "other", "2-x.jsonl", exact)
    entries = read_rollbacks({"n2": tmp_path / "other"})
    [violation] = check(ops, {"m": {K: b"a", L: b"l2"}}, [("m", [])], rolled_back=entries)
    assert violation.rule == "rollback files" and "2-x.jsonl line 1" in violation.what


def write_rollback(data_dir, name: str, lines) -> None:
    import json
    directory = data_dir / "rollback"
    directory.mkdir(parents=True, exist_ok=True)
    with open(directory / name, "w") as file:
        for line in lines:
            file.write((line if isinstance(line, str) else json.dumps(line)) + "\n")


def test_a_binary_value_comes_back_from_its_base64():
    from tests.chaos.rollback import parse_line
    raw = b'{"key": "00ff", "seq": 1, "deleted": false, "content_type": "a", "encoding": "b", ' \
          b'"value": "/wA=", "value_encoding": "base64", "exact": true, "time": 12.5}'
    entry = parse_line("n1", "f", 1, raw)
    assert (entry.key, entry.value) == (b"\x00\xff", b"\xff\x00")


@pytest.mark.parametrize("line, what", [
    ("not json", "not JSON"), ("[1]", "not a JSON object"),
    ('{"key": "6b", "seq": 1, "deleted": false}', "no exact"),
    ('{"key": "zz", "seq": 1, "deleted": true, "exact": true}', "hex"),
    ('{"key": "6b", "seq": -1, "deleted": true, "exact": true}', "seq"),
    ('{"key": "6b", "seq": 1, "deleted": "no", "exact": true}', "true or false"),
    ('{"key": "6b", "seq": 1, "deleted": false, "exact": true, "content_type": "", '
     '"encoding": ""}', '"value"'),
    ('{"key": "6b", "seq": 1, "deleted": false, "exact": true, "content_type": "", '
     '"encoding": "", "value": "%%", "value_encoding": "base64"}', "not base64")])
def test_a_rollback_line_that_says_too_little_is_an_error_naming_file_and_line(tmp_path, line,
                                                                             what):
    write_rollback(tmp_path / "n1", "1-1.jsonl", [
        {"key": "6b", "seq": 1, "deleted": True, "exact": True}, line])
    with pytest.raises(RollbackFileError) as raised:
        read_rollbacks({"n1": tmp_path / "n1"})
    assert "1-1.jsonl line 2" in str(raised.value) and what in str(raised.value)


def test_a_rollback_file_cut_short_is_an_error(tmp_path):
    (tmp_path / "rollback").mkdir()
    (tmp_path / "rollback" / "1-1.jsonl").write_text('{"key": "6b", "seq": 1, "del')
    with pytest.raises(RollbackFileError, match="cut short"):
        read_rollbacks({"n1": tmp_path})
    assert read_rollbacks({"n2": tmp_path / "nothing here"}) == []


def test_a_rollback_file_holds_only_what_was_written_to_its_key():
    ops = [w(b"a", 1, 2), w(b"x", 1, 2, result=FAIL), w(b"i", 1, 2, result=INFO), d(3, 4),
           w(b"l", 1, 2, key=L)]
    assert check_rollbacks(ops, frozenset({(K, b"a"), (K, b"i"), (K, None)})) == []
    wrong = check_rollbacks(ops, frozenset({(K, b"x"), (K, b"never"), (K, b"l"), (L, None)}))
    assert sorted((v.key, v.what.split(",")[0]) for v in wrong) == [
        (K, "a rollback file holds the value l"), (K, "a rollback file holds the value never"),
        (K, "a rollback file holds the value x"), (L, "a rollback file holds a delete of it")]


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
    assert sorted(v.rule for v in check(ops, finals, [("m", ["s"])], role_samples=[])) == \
        ["reads", "replicas"]
    two_masters = [sample("m", 1, 1.1, lease_s=2), sample("s", 1.5, 1.6, lease_s=2)]
    assert "one master" in {v.rule for v in check(ops, finals, [("m", ["s"])],
                                                  role_samples=two_masters)}
    assert "one master" not in {v.rule for v in check(ops, finals, [("m", ["s"])])}


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
