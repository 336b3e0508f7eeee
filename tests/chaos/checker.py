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

Room for failover (contract section 7), both parameters of check():
    rolled_back   (key, value) pairs found in the nodes' rollback files; value None is a
                  rolled-back delete of the key. Such acknowledged mutations are excused from
                  the final-state rule (the failover dropped them and said so), unless they
                  were written with w=majority or w=all: those must never be rolled back.
    role_samples  reserved for "at most one master per partition at any moment", from
                  samples of what each node said it was; giving any raises
                  NotImplementedError until that rule is written, so nobody believes it ran.

Failures come back as Violation values; report() turns them into text for a person, with
the operations involved and their times, and what the nemesis did around them.
"""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Iterable, Mapping, Optional, Sequence

from tests.chaos.history import DELETE, FAIL, INFO, OK, READ, WRITE, Event, Op, show

State = Mapping[bytes, bytes]  # key -> value; an absent key is not in it
Layout = Sequence[tuple[str, Sequence[str]]]  # per partition: (master node, its slave nodes)
STRONG_CONCERNS = ("majority", "all")


@dataclass(frozen=True)
class Violation:
    rule: str
    key: Optional[bytes]
    what: str
    ops: tuple[Op, ...] = field(default=())


def effect(op: Op) -> Optional[bytes]:
    """What a mutation leaves in its key: the value written, or None (absent) for a delete."""
    return op.value if op.kind == WRITE else None


def _by_key(ops: Iterable[Op]) -> dict[bytes, list[Op]]:
    grouped: dict[bytes, list[Op]] = defaultdict(list)
    for op in ops:
        grouped[op.key].append(op)
    return grouped


def check_final_state(ops: Sequence[Op], final: State,
                      rolled_back: frozenset = frozenset()) -> list[Violation]:
    """The final-state rule (module docstring) for every key of the history or the state."""
    violations = []
    grouped = _by_key(op for op in ops if op.mutates)
    for key in sorted(set(grouped) | set(final)):
        mutations = grouped.get(key, [])
        excused = [m for m in mutations if m.result == OK and _rolled_back(m, rolled_back)]
        violations += [Violation("final state", key, f"a write with w={m.w} was rolled back: "
                                 "such writes must survive a failover", (m,))
                       for m in excused if m.w in STRONG_CONCERNS]
        possible = [m for m in mutations if m.result in (OK, INFO) and m not in excused]
        acknowledged = [m for m in possible if m.result == OK]
        last_start = max((m.start for m in acknowledged), default=float("-inf"))
        candidates = [m for m in possible if not (m.result == OK and m.end < last_start)]
        allowed = {effect(m) for m in candidates}
        if not acknowledged:
            allowed.add(None)
        actual = final.get(key)
        if actual not in allowed:
            violations.append(_explain_final(key, actual, mutations, candidates, acknowledged,
                                             excused))
    return violations


def _rolled_back(op: Op, rolled_back: frozenset) -> bool:
    return (op.key, effect(op)) in rolled_back


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


def check(ops: Sequence[Op], finals: Mapping[str, State], layout: Layout, *,
          rolled_back: Iterable[tuple[bytes, Optional[bytes]]] = (),
          role_samples: Optional[Sequence] = None) -> list[Violation]:
    """Every rule over one run: `finals` maps each node to its final content, `layout` says
    which node is each partition's master and which are its slaves (the store's content is
    its masters' contents together)."""
    if role_samples is not None:
        raise NotImplementedError("the one-master-per-partition rule comes with failover")
    store: dict[bytes, bytes] = {}
    for master, _ in layout:
        store.update(finals[master])
    violations = check_final_state(ops, store, frozenset(rolled_back))
    violations += check_reads(ops)
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
        if shown:
            low, high = shown[0].start - 1.0, max(op.end for op in shown) + 1.0
            lines += [f"    nemesis at {e.at - t0:8.3f}: {e.what}" for e in events
                      if low <= e.at <= high]
    if len(violations) > limit:
        lines.append(f"... and {len(violations) - limit} more")
    return "\n".join(lines)
