"""The chaos checker's one-master rule (checker.check_one_master, master_spans.py) on
synthetic role samples: one node at a time may take writes in a partition, the lease being
the tolerance."""
from __future__ import annotations

from tests.chaos.checker import check_one_master, report
from tests.chaos.history import Event
from tests.chaos.synthetic import every, sample


def test_a_master_replaced_after_its_lease_ran_out_is_one_master_at_a_time():
    samples = (every("n1", 0, 2, lease_s=1.5)            # leased master until 2.01 + 1.5
               + every("n1", 2.1, 6, lease_s=0.0)        # cut off: no lease left
               + every("n2", 0, 3.5, role="slave", leased=False, lease_s=0)
               + every("n2", 3.6, 6, epoch=2, lease_s=2.0)  # promoted at 3.6 > 3.51
               + every("n1", 6.1, 8, role="slave", epoch=2, lease_s=0)
               + every("n2", 6.1, 8, epoch=2, lease_s=2.0))
    assert check_one_master(samples) == []


def test_two_masters_at_once_fail_and_the_report_shows_their_samples():
    samples = (every("n1", 0, 2, lease_s=1.5)
               + every("n2", 3.0, 4, epoch=2, lease_s=2.0))  # asked at 3.0 < 2.01 + 1.5
    [violation] = check_one_master(samples)
    assert violation.rule == "one master" and violation.key is None
    assert "n1 (epoch 1) and n2 (epoch 2)" in violation.what and "0.510 s" in violation.what
    text = report([violation], t0=0, events=[Event(2.5, "SIGSTOP n1"), Event(9, "far away")])
    assert "[   2.000 ..    2.010] n1 said master, epoch 1, lease 1.500 s left" in text
    assert "[   3.000 ..    3.010] n2 said master, epoch 2, lease 2.000 s left" in text
    assert "SIGSTOP n1" in text and "far away" not in text


def test_a_lease_is_counted_from_the_answer_and_a_sample_from_the_question():
    """n1's span ends at answer + lease (3.5 + 1 = 4.5); n2's begins when it was asked: a
    question that left at 4.45 and came back as master at 4.6 overlaps."""
    n1 = [sample("n1", 2.0, 3.5, lease_s=1.0)]
    assert check_one_master(n1 + [sample("n2", 4.5, 4.6)]) == []
    [violation] = check_one_master(n1 + [sample("n2", 4.45, 4.6)])
    assert "0.050 s" in violation.what


def test_a_master_without_lease_left_or_a_slave_takes_no_writes():
    samples = (every("n1", 0, 5, lease_s=0.0) + every("n2", 0, 5, epoch=2)
               + every("n3", 0, 5, role="slave", leased=False, lease_s=0))
    assert check_one_master(samples) == []


def test_a_master_never_leased_may_take_writes_until_its_next_answer():
    first = [sample("n1", 0, 0.1, leased=False, lease_s=0)]
    promoted = every("n2", 4, 6, epoch=2)
    [violation] = check_one_master(first + [sample("n1", 5, 5.2, role="slave")] + promoted)
    assert "n1 (epoch 1) and n2 (epoch 2)" in violation.what and "1.200 s" in violation.what
    assert check_one_master(first + [sample("n1", 3, 3.2, role="slave")] + promoted) == []
    # With no later answer its span runs to the run's last answer.
    assert len(check_one_master(first + promoted)) == 1


def test_masters_of_different_partitions_do_not_conflict():
    samples = every("a1", 0, 3) + every("b1", 0, 3, partition=1)
    assert check_one_master(samples) == []
    assert len(check_one_master(samples + every("a2", 1, 2, partition=0))) == 1
