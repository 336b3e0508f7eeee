"""The chaos test's verdict: pure functions over a history (history.py) and the final state.

Values are unique per write, so a value names the write that wrote it. Rules:

final state (check_final_state)
    For each key, M = its writes and deletes that were acknowledged (ok) or unknown (info).
    A mutation m of M is *known to precede* another when m is acknowledged and ended before an
    acknowledged mutation of the key began (m.end < other.start): real time orders them, so
    m's effect cannot be the last one. An unknown mutation never is: it may be applied at any
    time after its start (a timed-out request can still arrive). The key's final value (absent
    counts as a value, the effect of a delete) must be the effect of a mutation of M that is
    not known to precede another; absent is also allowed when M holds no acknowledged
    mutation (the initial state). This one rule says: an acknowledged write is there unless a
    later write or delete may have replaced it; a deleted key never comes back; nothing that
    failed, or was never written, appears.
reads (check_reads)
    A read that returned a value returned one written to that key, by a write that did not
    fail and that began before the read ended. Reads may be stale (slaves serve reads), so
    which of the possible values it saw is not checked, and "absent" is always possible.
replicas (check_replicas)
    Each slave's final content equals its master's, key by key.

Failover (contract section 7), two parameters of check():
    rolled_back   (key, value) pairs, or rollback.RolledBack entries, from the nodes' rollback
                  files (rollback.py); value None is a rolled-back delete of the key. Such
                  mutations are excused from the final-state rule (the failover dropped them
                  and said so), unless they were acknowledged with w=majority or w=all: those
                  must never be rolled back. A rollback file keeps one line per key, the old
                  master's last write to it, so an acknowledged w=1 mutation known to precede
                  an excused one may have been replaced by it on the old master before both
                  were dropped: it is no longer required, only allowed (a strong mutation in
                  between still is). A delete carries no value to say which delete it was, so
                  each combination of the key's deletes that may have been the rolled-back ones
                  is tried (past MAX_DELETE_CHOICES, the latest that fit and the earliest); with
                  role samples, only deletes that began before the node first said it had the
                  rollback file's epoch (it stepped down then) fit. An inexact line may stand
                  for no delete at all (the old master merely lacked the key).
rollback files (check_rollbacks)
                  Every rolled-back item is a value some write that did not fail wrote to that
                  key (or, for an exact delete line, the key had a delete that did not fail): a
                  rollback file holds what a master applied, nothing else.
one master (check_one_master), from role_samples (sampler.py)
                  A sample where a node said it was master and took writes (a lease left, or
                  never leased) means it may take writes from the moment the sample was asked
                  until the node's clock at its answer (`clock`: the nodes share this kernel's
                  monotonic clock; without it, when the answer came) plus the lease it had
                  left: its lease ends then, whatever happens afterwards. A master never leased
                  has no such bound: until its next answer (or the last answer of the run).
                  Two nodes of one partition must never both be in such a span: the lease is
                  the tolerance. A span starts when the question left, not when the node read
                  it, so a slow answer makes a new master look master a little early; the
                  margin the design keeps (--failover-after minus the lease) is far above the
                  milliseconds a question takes, and a report shows both samples' times.

Failures come back as Violation values; report() turns them into text for a person, with
the operations involved and their times, and what the nemesis did around them.
"""
from __future__ import annotations

from collections import defaultdict
from itertools import product
from dataclasses import dataclass, field
from typing import Callable, Iterable, Mapping, Optional, Sequence

from tests.chaos.history import (DELETE, FAIL, INFO, OK, READ, WRITE, Event, Op, RoleSample,
                                 show)
from tests.chaos.master_spans import master_spans, merged_runs

State = Mapping[bytes, bytes]  # key -> value; an absent key is not in it
Layout = Sequence[tuple[str, Sequence[str]]]  # per partition: (master node, its slave nodes)
STRONG_CONCERNS = ("majority", "all")
MAX_DELETE_CHOICES = 2000


@dataclass(frozen=True)
class Violation:
    rule: str
    key: Optional[bytes]
    what: str
    ops: tuple[Op, ...] = field(default=())
    samples: tuple[RoleSample, ...] = field(default=())


def effect(op: Op) -> Optional[bytes]:
    """What a mutation leaves in its key: the value written, or None (absent) for a delete."""
    return op.value if op.kind == WRITE else None


def _by_key(ops: Iterable[Op]) -> dict[bytes, list[Op]]:
    grouped: dict[bytes, list[Op]] = defaultdict(list)
    for op in ops:
        grouped[op.key].append(op)
    return grouped


def check_final_state(ops: Sequence[Op], final: State, rolled_back: Iterable = (),
                      role_samples: Optional[Sequence[RoleSample]] = None) -> list[Violation]:
    """The final-state rule (module docstring) for every key of the history or the state;
    `rolled_back` holds (key, value) pairs or rollback.RolledBack entries. With role samples,
    a rolled-back delete is one that began before its node first said it had the epoch of
    its rollback file (it stepped down then, and took no write after)."""
    violations = []
    entries = _rollback_entries(rolled_back, role_samples)
    grouped = _by_key(op for op in ops if op.mutates)
    for key in sorted(set(grouped) | set(final)):
        mutations = grouped.get(key, [])
        written, deletes = entries.get(key, (set(), []))
        rolled = [m for m in mutations if m.kind == WRITE and m.result in (OK, INFO)
                  and m.value in written]
        violations += _strong_rolled_back(key, [m for m in rolled if m.result == OK])
        choices = _delete_choices(key, mutations, deletes, violations)
        actual = final.get(key)
        first = None
        for chosen in choices:
            verdict = _final_allowed(mutations, set(rolled) | set(chosen))
            if actual in verdict[0]:
                break
            first = first or verdict
        else:
            allowed, candidates, acknowledged, excused = first
            violations.append(_explain_final(key, actual, mutations, candidates, acknowledged,
                                             excused))
    return violations


def _rollback_entries(rolled_back: Iterable, samples: Optional[Sequence[RoleSample]]
                      ) -> dict[bytes, tuple[set, list[tuple[bool, float]]]]:
    """key -> (the values rolled back, [(exact, began before), for each rolled-back delete])."""
    entries: dict[bytes, tuple[set, list]] = defaultdict(lambda: (set(), []))
    down = _stepped_down(samples or ())
    for entry in rolled_back:
        if isinstance(entry, tuple):
            (key, value), exact, before = entry, True, float("inf")
        else:
            (key, value), exact = entry.pair, entry.exact
            before = down(entry.node, entry.epoch) if entry.epoch else float("inf")
        if value is None:
            entries[key][1].append((exact, before))
        else:
            entries[key][0].add(value)
    return entries


def _stepped_down(samples: Sequence[RoleSample]) -> Callable[[str, int], float]:
    """(node, epoch) -> when the node first answered with that epoch or a later one (inf if
    never): a node that says so has stepped down from any older configuration."""
    by_node: dict[str, list[RoleSample]] = defaultdict(list)
    for sample in samples:
        by_node[sample.node].append(sample)
    for node_samples in by_node.values():
        node_samples.sort(key=lambda sample: sample.answered)

    def down(node: str, epoch: int) -> float:
        return next((s.answered for s in by_node.get(node, ()) if s.epoch >= epoch),
                    float("inf"))
    return down


def _strong_rolled_back(key: bytes, acknowledged: Sequence[Op]) -> list[Violation]:
    return [Violation("final state", key, f"a {m.kind} with w={m.w} was rolled back: such "
                      "writes must survive a failover", (m,))
            for m in acknowledged if m.w in STRONG_CONCERNS]


def _delete_choices(key: bytes, mutations: Sequence[Op], deletes: list[tuple[bool, float]],
                    violations: list[Violation]) -> list[tuple[Op, ...]]:
    """Which deletes of the key the rolled-back deletes may have been, as the combinations
    to try (a delete carries no value to say which): each a different delete that began
    before its node stepped down, not acknowledged with a strong concern; an inexact one (the
    old master merely lacked the key) may be none. Every combination up to
    MAX_DELETE_CHOICES; past that, two: the latest deletes that fit, and the earliest."""
    deletes_here = [m for m in mutations if m.kind == DELETE and (
        m.result == INFO or (m.result == OK and m.w not in STRONG_CONCERNS))]
    per_entry = []
    for exact, before in deletes:
        fits = [m for m in deletes_here if m.start < before]
        if exact and not fits:
            strong = [m for m in mutations if m.kind == DELETE and m.result == OK
                      and m.start < before]
            violations += _strong_rolled_back(key, strong[-1:])
        options = fits if exact else [None, *fits]
        if options:
            per_entry.append(options)
    total = 1
    for options in per_entry:
        total *= len(options)
    if total <= MAX_DELETE_CHOICES:
        combos = [tuple(m for m in combo if m is not None) for combo in product(*per_entry)]
        return [combo for combo in combos if len(set(combo)) == len(combo)] or [()]
    return [_assign(per_entry, latest=True), _assign(per_entry, latest=False)]


def _assign(per_entry: list[list], latest: bool) -> tuple[Op, ...]:
    """One different delete for each entry, the latest (or earliest) each can take."""
    taken: list[Op] = []
    order = sorted(per_entry, key=lambda options: max((m.start for m in options if m), default=0),
                   reverse=latest)
    for options in order:
        ranked = sorted((m for m in options if m is not None), key=lambda m: m.start,
                        reverse=latest)
        choice = next((m for m in ranked if m not in taken), None)
        if choice is not None:
            taken.append(choice)
    return tuple(taken)


def _final_allowed(mutations: Sequence[Op],
                   excused: set) -> tuple[set, list[Op], list[Op], list[Op]]:
    """(the final values allowed, the candidates, the required acknowledged mutations, the
    excused ones) with `excused` the rolled-back mutations: these are gone, and an
    acknowledged w=1 mutation known to precede one of them may have been replaced by it on the
    old master before both were rolled back (a rollback file keeps one line per key, its last
    write), so it is no longer required, only allowed."""
    possible = [m for m in mutations if m.result in (OK, INFO) and m not in excused]
    latest_excused = max((x.start for x in excused), default=float("-inf"))
    optional = {m for m in possible if m.result == OK and m.w not in STRONG_CONCERNS
                and m.end < latest_excused}
    acknowledged = [m for m in possible if m.result == OK and m not in optional]
    last_start = max((m.start for m in acknowledged), default=float("-inf"))
    candidates = [m for m in possible if not (m.result == OK and m.end < last_start)]
    allowed = {effect(m) for m in candidates}
    if not acknowledged:
        allowed.add(None)
    return allowed, candidates, acknowledged, [m for m in mutations if m in excused]


def _explain_final(key: bytes, actual: Optional[bytes], mutations: list[Op],
                   candidates: list[Op], acknowledged: list[Op], excused: list[Op]) -> Violation:
    explaining = tuple(m for m in candidates if m.result == OK) or tuple(candidates)
    if actual is None:
        return Violation("final state", key, "the key is absent, but an acknowledged write "
                         "that nothing may have replaced says it holds one of: "
                         + ", ".join(show(effect(m)) for m in explaining), explaining)
    source = next((m for m in mutations if m.kind == WRITE and m.value == actual), None)
    if source is None:
        return Violation("final state", key, f"holds {show(actual)}, a value never written to "
                         "this key", explaining)
    if source.result == FAIL:
        return Violation("final state", key, f"holds {show(actual)}, written by a write that "
                         "failed (it was never applied)", (source, *explaining))
    if source in excused:
        return Violation("final state", key, f"holds {show(actual)}, whose write is in a "
                         "rollback file (so it was dropped)", (source,))
    later = min((m for m in acknowledged if m.start > source.end), key=lambda m: m.start)
    what = "a deleted key came back" if later.kind == DELETE else "an overwritten value came back"
    return Violation("final state", key, f"{what}: it holds {show(actual)}, acknowledged "
                     f"before a later acknowledged {later.kind} began; the final value must be "
                     "one of: " + ", ".join(show(effect(m)) for m in candidates),
                     (source, later, *[m for m in explaining if m is not later]))


def check_reads(ops: Sequence[Op]) -> list[Violation]:
    """The read rule (module docstring)."""
    writes = {(op.key, op.value): op for op in ops if op.kind == WRITE}
    by_value = {op.value: op for op in ops if op.kind == WRITE}
    violations = []
    for read in ops:
        if read.kind != READ or read.result != OK or read.value is None:
            continue
        write = writes.get((read.key, read.value))
        if write is None:
            other = by_value.get(read.value)
            what = "a value never written to this key" + (
                f" (it was written to key {show(other.key)})" if other else "")
            violations.append(Violation("reads", read.key, f"read returned {what}",
                                        (read,) + ((other,) if other else ())))
        elif write.result == FAIL:
            violations.append(Violation("reads", read.key, "read returned the value of a write "
                                        "that failed (it was never applied)", (read, write)))
        elif write.start > read.end:
            violations.append(Violation("reads", read.key, "read returned a value whose write "
                                        "began after the read ended", (read, write)))
    return violations


def check_replicas(master: str, slaves: Sequence[str], finals: Mapping[str, State],
                   ops: Sequence[Op] = ()) -> list[Violation]:
    """Each slave's content equals its master's; one violation per key that differs."""
    grouped = _by_key(op for op in ops if op.mutates)
    violations = []
    on_master = finals[master]
    for slave in slaves:
        on_slave = finals[slave]
        for key in sorted(set(on_master) | set(on_slave)):
            if on_master.get(key) != on_slave.get(key):
                violations.append(Violation(
                    "replicas", key, f"{slave} holds {show(on_slave.get(key))}, its master "
                    f"{master} holds {show(on_master.get(key))}", tuple(grouped.get(key, ()))))
    return violations


def check_rollbacks(ops: Sequence[Op], rolled_back: Iterable) -> list[Violation]:
    """The rollback-files rule (module docstring). An inexact rolled-back delete (the old
    master only lacked a key the new master had) needs no delete behind it."""
    grouped = _by_key(op for op in ops if op.mutates and op.result != FAIL)
    violations = []
    seen = set()
    for entry in rolled_back:
        if isinstance(entry, tuple):
            (key, value), exact = entry, True
        else:
            (key, value), exact = entry.pair, entry.exact
        if (value is None and not exact) or (key, value) in seen:
            continue
        seen.add((key, value))
        mutations = grouped.get(key, [])
        if not any(effect(m) == value for m in mutations):
            what = "a delete of it" if value is None else f"the value {show(value)}"
            where = "" if isinstance(entry, tuple) else f" ({entry.path} line {entry.line})"
            violations.append(Violation("rollback files", key, f"a rollback file{where} holds "
                                        f"{what}, but no write or delete that did not fail did "
                                        "that to this key", tuple(mutations)))
    return sorted(violations, key=lambda v: (v.key, v.what))


def check_one_master(samples: Sequence[RoleSample]) -> list[Violation]:
    """The one-master rule (module docstring): one violation per overlap of two nodes' runs
    of spans in one partition."""
    runs: dict[int, list[tuple[str, tuple]]] = defaultdict(list)
    for (partition, node), spans in master_spans(samples).items():
        runs[partition] += [(node, run) for run in merged_runs(spans)]
    violations = []
    for partition, found in sorted(runs.items()):
        found.sort(key=lambda item: item[1][0])
        for index, (node, (start, end, first, furthest)) in enumerate(found):
            for other, (o_start, o_end, o_first, _) in found[index + 1:]:
                if o_start >= end:
                    break  # sorted by start: no later run begins before this one ends
                if other == node:
                    continue
                overlap = min(end, o_end) - o_start
                violations.append(Violation(
                    "one master", None, f"partition {partition}: {node} (epoch "
                    f"{furthest.epoch}) and {other} (epoch {o_first.epoch}) may both have "
                    f"taken writes for {overlap:.3f} s: {other} said it was master while "
                    f"{node} could still take writes (its lease, or its last answer as an "
                    f"unleased master, had not run out)", samples=(first, furthest, o_first)))
    return violations


def check(ops: Sequence[Op], finals: Mapping[str, State], layout: Layout, *,
          rolled_back: Iterable[tuple[bytes, Optional[bytes]]] = (),
          role_samples: Optional[Sequence[RoleSample]] = None) -> list[Violation]:
    """Every rule over one run: `finals` maps each node to its final content, `layout` says
    which node is each partition's master at the end and which are its slaves (the store's
    content is its masters' contents together); the one-master rule runs when role_samples
    are given (an empty list too)."""
    rolled_back = frozenset(rolled_back)
    store: dict[bytes, bytes] = {}
    for master, _ in layout:
        store.update(finals[master])
    violations = check_final_state(ops, store, rolled_back, role_samples)
    violations += check_rollbacks(ops, rolled_back)
    violations += check_reads(ops)
    if role_samples is not None:
        violations += check_one_master(role_samples)
    for master, slaves in layout:
        violations += check_replicas(master, slaves, finals, ops)
    return violations


def report(violations: Sequence[Violation], t0: float = 0.0, events: Sequence[Event] = (),
           limit: int = 12, ops_each: int = 8) -> str:
    """The first `limit` violations, each with its operations (the last `ops_each`; times in
    seconds since `t0`) and the nemesis events from a second before the first shown to a
    second after the last."""
    lines = [f"{len(violations)} violation(s) of the chaos checker's rules "
             f"(times in s since the history began):"]
    for violation in violations[:limit]:
        key = "" if violation.key is None else f" key {show(violation.key)}"
        lines.append(f"- [{violation.rule}]{key}: {violation.what}")
        shown = sorted(violation.ops, key=lambda op: op.start)
        if len(shown) > ops_each:  # the latest ones decide a final state: keep those
            lines.append(f"    ... {len(shown) - ops_each} earlier operations on this key")
            shown = shown[-ops_each:]
        lines += ["    " + op.describe(t0) for op in shown]
        samples = sorted(set(violation.samples), key=lambda sample: sample.asked)
        lines += ["    " + sample.describe(t0) for sample in samples]
        moments = [(op.start, op.end) for op in shown] + [(s.asked, s.answered + s.lease_s)
                                                          for s in samples]
        if moments:
            low = min(m[0] for m in moments) - 1.0
            high = max(m[1] for m in moments) + 1.0
            lines += [f"    nemesis at {e.at - t0:8.3f}: {e.what}" for e in events
                      if low <= e.at <= high]
    if len(violations) > limit:
        lines.append(f"... and {len(violations) - limit} more")
    return "\n".join(lines)
