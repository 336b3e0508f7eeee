"""The role sampler with a made-up `ask`, no processes: what it records, that it is bounded, that
it stops, and that a bug in it is not swallowed."""
from __future__ import annotations

import threading
import time

import pytest

from tests.chaos.sampler import RoleSampler, sample_of


def test_a_stats_answer_becomes_a_sample_and_anything_else_does_not():
    stats = {"role": "master", "epoch": 3, "leased": True, "lease_s": 1.25, "sequence": 9}
    got = sample_of("n1", 2, 1.0, 1.5, stats)
    assert (got.node, got.partition, got.asked, got.answered, got.role, got.epoch, got.leased,
            got.lease_s) == ("n1", 2, 1.0, 1.5, "master", 3, True, 1.25)
    assert got.may_take_writes
    before_leases = sample_of("n1", 0, 1.0, 1.5, {"role": "master"})
    assert (before_leases.epoch, before_leases.leased, before_leases.lease_s) == (0, False, 0.0)
    assert before_leases.may_take_writes
    assert not sample_of("n1", 0, 1, 2, {**stats, "lease_s": 0.0}).may_take_writes
    assert not sample_of("n1", 0, 1, 2, {**stats, "role": "slave"}).may_take_writes
    assert sample_of("n1", 0, 1, 2, None) is None
    assert sample_of("n1", 0, 1, 2, {"partitions": []}) is None  # a router's stats


def test_it_asks_every_node_about_every_period_until_stopped():
    asked: dict[str, int] = {"n1": 0, "n2": 0, "n3": 0}
    lock = threading.Lock()

    def ask(node: str):
        with lock:
            asked[node] += 1
        if node == "n3":
            time.sleep(0.05)  # slow, then no answer: it must not slow the others
            return None
        return {"role": "master" if node == "n1" else "slave", "epoch": 1, "leased": True,
                "lease_s": 2.0}
    sampler = RoleSampler(ask, {"n1": 0, "n2": 0, "n3": 0}, period=0.02).start()
    time.sleep(0.5)  # letting the sampler run is what this test is about
    began = time.monotonic()
    samples = sampler.stop()
    assert time.monotonic() - began < 1.0
    count_after_stop = dict(asked)
    time.sleep(0.1)
    assert asked == count_after_stop, "a thread kept asking after stop()"
    by_node = {node: [s for s in samples if s.node == node] for node in ("n1", "n2", "n3")}
    assert 10 <= len(by_node["n1"]) <= 30 and 10 <= len(by_node["n2"]) <= 30
    assert by_node["n3"] == [] and sampler.unanswered["n3"] >= 3
    assert all(s.asked <= s.answered for s in samples)
    assert [s.asked for s in samples] == sorted(s.asked for s in samples)
    assert {s.role for s in by_node["n1"]} == {"master"}


def test_each_thread_asks_at_most_max_samples_times():
    sampler = RoleSampler(lambda node: {"role": "slave"}, {"n1": 0, "n2": 1}, period=0.0,
                          max_samples=5).start()
    deadline = time.monotonic() + 5
    while len(sampler.samples) < 10 and time.monotonic() < deadline:
        time.sleep(0.01)  # polling the sampler under test
    time.sleep(0.1)
    assert len(sampler.stop()) == 10
    assert {s.partition for s in sampler.samples if s.node == "n2"} == {1}


def test_a_bug_in_asking_is_raised_by_stop():
    def ask(node: str):
        raise ZeroDivisionError("test bug")
    sampler = RoleSampler(ask, {"n1": 0}, period=0.01).start()
    time.sleep(0.05)
    with pytest.raises(ZeroDivisionError):
        sampler.stop()
