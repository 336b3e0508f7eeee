"""When each node may have taken writes, from the role samples of a chaos run (sampler.py):
the timelines that checker.check_one_master compares. Pure functions over the samples."""
from __future__ import annotations

from collections import defaultdict
from typing import Sequence

from tests.chaos.history import RoleSample


Span = tuple[float, float, RoleSample]  # (from, until, the sample that says so)


def master_spans(samples: Sequence[RoleSample]) -> dict[tuple[int, str], list[Span]]:
    """(partition, node) -> the spans in which the node may have taken writes, one per sample
    that says so (checker.py's docstring, "one master"), in the order asked."""
    by_node: dict[tuple[int, str], list[RoleSample]] = defaultdict(list)
    for sample in samples:
        by_node[(sample.partition, sample.node)].append(sample)
    last_answer = max((sample.answered for sample in samples), default=0.0)
    spans: dict[tuple[int, str], list[Span]] = {}
    for where, node_samples in by_node.items():
        node_samples.sort(key=lambda sample: sample.asked)
        found = []
        for index, sample in enumerate(node_samples):
            if not sample.may_take_writes:
                continue
            if sample.leased:  # the node's own clock places its lease's end exactly
                end = (sample.answered if sample.clock is None else sample.clock) + sample.lease_s
            elif index + 1 < len(node_samples):
                end = node_samples[index + 1].answered
            else:
                end = last_answer
            found.append((sample.asked, max(end, sample.answered), sample))
        spans[where] = found
    return spans


def merged_runs(spans: list[Span]) -> list[tuple[float, float, RoleSample, RoleSample]]:
    """Overlapping spans of one node joined: (start, end, the sample that opened the run, the
    one whose span reaches furthest)."""
    runs: list[list] = []
    for start, end, sample in sorted(spans, key=lambda span: span[0]):
        if runs and start <= runs[-1][1]:
            if end > runs[-1][1]:
                runs[-1][1], runs[-1][3] = end, sample
        else:
            runs.append([start, end, sample, sample])
    return [tuple(run) for run in runs]
