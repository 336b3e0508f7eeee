"""Which slaves count toward the promotion rule (router/failover.py, docs/failover.md): those
ready on the master's history, and, after the master restarted and continued its previous
history, those still on that one no further than where it switched. Found by the chaos suite:
a master killed, restarted, and isolated a second later left its partition read-only for good,
since neither slave had yet moved to the restarted master's new history."""
from yaddb.replication.state import ReplicationState
from yaddb.router.failover import _PartitionWatch, on_masters_line


def slave(history, applied, ready=True):
    return {"role": "slave", "replication": {"history": history, "applied": applied, "ready": ready}}


def watch(history, previous=None):
    """A partition watch whose master reported `history` and, if given, (the history it
    continued, where it switched), as _note_master takes them from its stats."""
    state = _PartitionWatch(0.0)
    if history is not None:
        state.line = ReplicationState(history, previous_history=previous and previous[0],
                                      switched_at=previous[1] if previous else 0)
    return state


def test_a_slave_on_the_masters_history_counts():
    assert on_masters_line(slave("new", 120), watch("new", ("old", 100)))
    assert not on_masters_line(slave("new", 120, ready=False), watch("new", ("old", 100)))
    assert not on_masters_line(slave("other", 120), watch("new", ("old", 100)))


def test_a_slave_still_on_the_history_the_master_continued_counts_up_to_the_switch():
    restarted = watch("new", ("old", 100))
    assert on_masters_line(slave("old", 100), restarted)
    assert on_masters_line(slave("old", 57), restarted)
    # Past the switch it holds writes the restarted master lost: not a prefix of its line.
    assert not on_masters_line(slave("old", 101), restarted)
    assert not on_masters_line(slave("old", 100), watch("new"))  # no continued history known
    assert not on_masters_line(slave("old", 100), watch(None, None))


def test_malformed_answers_never_count():
    line = watch("new", ("old", 100))
    for answer in ({}, {"replication": None}, {"replication": {"history": "new", "ready": True}},
                   {"replication": {"history": "new", "applied": "12", "ready": True}}):
        assert not on_masters_line(answer, line)
