"""Crash test: a child process writes through the engine and is killed with SIGKILL, many times.

The child acknowledges every write on stdout only after the engine call returned (and announces
it with a "B" line before the call). After each kill the parent checks a copy of the data
directory, as the crash left it, against a model of every acknowledged write: each acknowledged
value is there, each acknowledged delete stays deleted, nothing else appears, the one write in
flight at the kill is either wholly applied or not at all, and the sequence number never goes
back. The original directory is left as the crash left it, so the next child recovers it itself
and damage of any kind accumulates across rounds.
"""
from __future__ import annotations

import os
import random
import shutil
import signal
import sys
import textwrap
import time
from pathlib import Path
from typing import Optional

import pytest

from yaddb.lsm import Engine
from tests import proc_table
from tests.helpers import child_env, wait_for

ROUNDS = 18
# The kill points come from this seed; set YADDB_CRASH_SEED to explore others.
SEED = int(os.environ.get("YADDB_CRASH_SEED", "0x59414442"), 0)
DEADLINE = 60.0  # seconds; generous, the machine may be loaded

CHILD = textwrap.dedent("""
    import os, random, sys
    from yaddb.lsm import Engine

    path, seed, mode, memtable_bytes = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
    acks = os.open(sys.argv[5], os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    rng = random.Random(seed)
    keys = [b"key%03d" % i for i in range(90)] + [b"\\x00", b"\\x00\\xff", b"\\xff" * 16, b"z" * 1024]

    def emit(line):  # into the acks file, not stdout: warnings on stderr cannot mix in
        data = (line + "\\n").encode()
        while data:
            data = data[os.write(acks, data):]

    def value(i):
        # Unique per write (seed, counter), random length, sometimes empty.
        if rng.random() < 0.05:
            return b""
        return b"%d.%d." % (seed, i) + rng.randbytes(rng.randrange(0, 120))

    engine = Engine(path, fsync="always", memtable_bytes=memtable_bytes, compaction=mode)
    emit("O %d" % engine.sequence)
    for i in range(1_000_000):
        r = rng.random()
        if r < 0.5:
            key, val = rng.choice(keys), value(i)
            emit("B P %s %s" % (key.hex(), val.hex()))
            seq = engine.put(key, val)
        elif r < 0.7:
            key = rng.choice(keys)
            emit("B D %s" % key.hex())
            seq = engine.delete(key)
        else:
            ops = []
            for j in range(rng.randrange(1, 7)):
                key = rng.choice(keys)
                ops.append((key, None if rng.random() < 0.35 else value(i * 10 + j)))
            emit("B W " + " ".join("D:%s" % k.hex() if v is None else "P:%s:%s" % (k.hex(), v.hex())
                                   for k, v in ops))
            seq = engine.write_batch(ops)
        emit("A %d" % seq)
    engine.close()
    emit("END")
""")

Op = list  # [(key, value-or-None), ...] in order


def parse_op(fields: list[str]) -> Op:
    kind = fields[0]
    if kind == "P":
        return [(bytes.fromhex(fields[1]), bytes.fromhex(fields[2]) if len(fields) > 2 else b"")]
    if kind == "D":
        return [(bytes.fromhex(fields[1]), None)]
    assert kind == "W", fields
    ops = []
    for token in fields[1:]:
        parts = token.split(":")
        ops.append((bytes.fromhex(parts[1]), None) if parts[0] == "D"
                   else (bytes.fromhex(parts[1]), bytes.fromhex(parts[2])))
    return ops


def apply(model: dict, op: Op) -> None:
    for key, value in op:
        model[key] = value


# ---- processes ---------------------------------------------------------------------------------

def live_group_members(pgid: int) -> dict[int, str]:
    """pid -> command line of every live (not zombie) process in process group pgid."""
    return {pid: proc_table.cmdline(pid) for pid in proc_table.all_pids()
            if proc_table.group_of(pid) == pgid and proc_table.proc(pid)}


def workers_in_group(pgid: int) -> dict[int, str]:
    return {pid: cmd for pid, cmd in live_group_members(pgid).items() if "yaddb.lsm.workerd" in cmd}


class Output:
    """Reads a child's stdout file as it grows."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.data = b""

    def refresh(self) -> bytes:
        with open(self.path, "rb") as file:
            file.seek(len(self.data))
            self.data += file.read()
        return self.data

    def acks(self) -> int:
        return self.refresh().count(b"\nA ")

    def opened(self) -> bool:
        return self.refresh().startswith(b"O ")


# ---- checking ----------------------------------------------------------------------------------

def check_against_model(engine: Engine, model: dict, context: str) -> None:
    expected = {key: value for key, value in model.items() if value is not None}
    actual = dict(engine.items())
    missing = {k: v for k, v in expected.items() if actual.get(k) != v}
    extra = {k: v for k, v in actual.items() if k not in expected}
    assert not missing and not extra, (
        f"{context}: {len(missing)} acknowledged values lost or wrong (e.g. "
        f"{list(missing.items())[:3]}, found {[actual.get(k) for k in list(missing)[:3]]}), "
        f"{len(extra)} keys that should not exist (e.g. {list(extra.items())[:3]})")
    for key, value in model.items():
        assert engine.get(key) == value, f"{context}: get({key!r}) disagrees with the model"
    for absent in (b"never-written", b"key999", b"\x01"):
        assert engine.get(absent) is None


def test_sigkill_at_random_points_loses_no_acknowledged_write(tmp_path, processes):
    rng = random.Random(SEED)
    data_dir = tmp_path / "data"
    child_script = tmp_path / "child.py"
    child_script.write_text(CHILD)
    env = child_env()

    model: dict[bytes, Optional[bytes]] = {}
    sequence = 0            # the engine's sequence as of the last check
    groups: list[int] = []  # process groups of every child, checked for leftovers at the end
    rounds_with_worker = total_acks = 0

    for round_no in range(ROUNDS):
        mode = "process" if round_no % 3 != 2 else "thread"
        memtable_bytes = rng.choice([2048, 4096, 8192])
        early_kill = round_no % 6 == 5   # kill while the child is still starting or recovering
        kill_group = round_no % 2 == 1   # else only the child dies and its worker must notice
        out_path = tmp_path / f"round{round_no}.out"
        err_path = tmp_path / f"round{round_no}.err"
        out_path.touch()  # the child appends to it
        child = processes.child(
            f"round {round_no}", [sys.executable, str(child_script), str(data_dir),
                                  str(rng.randrange(1 << 30)), mode, str(memtable_bytes),
                                  str(out_path)],
            log_path=str(err_path), env=env, tie=False)  # its own process group
        groups.append(child.pid)
        output = Output(out_path)
        workers: dict[int, str] = {}
        try:
            def alive() -> None:
                if not child.running and b"END" not in output.refresh():
                    pytest.fail(f"round {round_no}: the child exited by itself "
                                f"(code {child.returncode}):\n{child.log_tail(3000)}")

            if early_kill:
                time.sleep(rng.uniform(0.0, 0.3))
            else:
                wanted = rng.randrange(50, 400)

                def progressed() -> bool:
                    alive()
                    return output.acks() >= wanted

                wait_for(progressed, f"round {round_no}: {wanted} acknowledged writes", DEADLINE)
                if mode == "process":
                    # Flushes have happened by now or soon will: wait for the worker process, so
                    # the kill below always has one to take down with the child.
                    def worker_started() -> dict:
                        alive()
                        return workers_in_group(child.pid)

                    wait_for(worker_started, f"round {round_no}: a workerd process")
                time.sleep(rng.uniform(0.05, 1.2))
                alive()
            workers = workers_in_group(child.pid)
            if workers:
                rounds_with_worker += 1
            if kill_group:
                os.killpg(child.pid, signal.SIGKILL)
            else:
                os.kill(child.pid, signal.SIGKILL)
            assert child.wait(DEADLINE) == -signal.SIGKILL, (
                f"round {round_no}: the child did not die of the kill:\n{child.log_tail(3000)}")
            # The engine's workers exit when their stdin closes, i.e. when the child dies.
            wait_for(lambda: not live_group_members(child.pid),
                     f"round {round_no}: workers {workers} to exit after the child was killed")
        finally:
            child.kill()  # the whole group, and reaped

        # ---- what the child acknowledged ---------------------------------------------------
        lines = output.refresh().split(b"\n")[:-1]  # a cut-off last line does not count
        pending: Optional[Op] = None
        last_seq = sequence
        acks = 0
        for index, raw in enumerate(lines):
            fields = raw.decode().split(" ")
            if fields[0] == "O":
                assert index == 0
                opened_at = int(fields[1])
                assert opened_at >= sequence, (
                    f"round {round_no}: the sequence went back across a restart, "
                    f"{sequence} -> {opened_at}")
                assert opened_at == sequence, (
                    f"round {round_no}: the child recovered sequence {opened_at} from the same "
                    f"files in which the previous check found {sequence}")
            elif fields[0] == "B":
                assert pending is None
                pending = parse_op(fields[1:])
            elif fields[0] == "A":
                assert pending is not None
                seq = int(fields[1])
                assert seq == last_seq + len(pending), (
                    f"round {round_no}: write acknowledged with seq {seq} after {last_seq}")
                apply(model, pending)
                last_seq, pending = seq, None
                acks += 1
            else:
                assert fields[0] == "END", raw
        total_acks += acks

        # ---- check a copy of the directory as the crash left it ------------------------------
        if not data_dir.exists():
            continue  # killed before the engine created it
        check_dir = tmp_path / "check"
        shutil.copytree(data_dir, check_dir)
        try:
            engine = Engine(str(check_dir), compaction="manual")
            try:
                recovered = engine.sequence
                assert recovered >= sequence, (
                    f"round {round_no}: sequence went back from {sequence} to {recovered}")
                if pending is not None and recovered == last_seq + len(pending):
                    apply(model, pending)  # the write in flight reached the log whole
                else:
                    assert recovered == last_seq, (
                        f"round {round_no}: recovered sequence {recovered}, but the last "
                        f"acknowledged write was {last_seq} and the one in flight "
                        f"{'had ' + str(len(pending)) + ' entries' if pending else 'did not exist'}")
                check_against_model(engine, model, f"seed {SEED:#x} round {round_no} ({mode}, "
                                                   f"memtable {memtable_bytes}, {acks} acks)")
                sequence = recovered
            finally:
                engine.close()
        finally:
            shutil.rmtree(check_dir)

    assert total_acks >= 500, "the children acknowledged too few writes for a meaningful test"
    assert rounds_with_worker >= 5, "too few rounds were killed with a worker process running"

    # The directory itself, after all those crashes: recover, compact everything, reopen.
    with Engine(str(data_dir), compaction="thread", memtable_bytes=4096) as engine:
        assert engine.sequence == sequence
        assert engine.stats()["segments"] >= 1, "no flush happened during the whole test"
        check_against_model(engine, model, "final recovery")
        engine.put(b"after-crashes", b"1")
        model[b"after-crashes"] = b"1"
        engine.compact()
        check_against_model(engine, model, "after a full compaction")
        final_sequence = engine.sequence
    with Engine(str(data_dir), compaction="manual") as engine:
        assert engine.sequence == final_sequence == sequence + 1
        check_against_model(engine, model, "reopened after the full compaction")
        assert engine.stats()["segments"] <= 1

    leftovers = {pid: cmd for pgid in groups for pid, cmd in live_group_members(pgid).items()
                 if "yaddb.lsm.workerd" in cmd or str(child_script) in cmd}
    assert not leftovers, f"processes outlived their killed parent: {leftovers}"
