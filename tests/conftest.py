"""Fixtures for every test: `processes` (every process a test starts, stopped at teardown) and
a check after each test module that nothing it started still runs."""
from __future__ import annotations

import time

import pytest

from tests import proc_table
from tests.helpers import Processes

LEFTOVER_WAIT_S = 15.0  # a process that is stopping gets this long before it counts as left over


@pytest.fixture
def processes(tmp_path):
    """processes.node(...), .router(...), .child(...) start a process and register it at once;
    all are stopped (and anything they started killed) at teardown, also when the test failed."""
    started = Processes(tmp_path)
    yield started
    started.close()


@pytest.fixture(scope="module", autouse=True)
def no_process_outlives_its_module(request):
    """After each module: no run_node.py, run_router.py or yaddb.lsm.workerd process it
    started may still run. Leftovers are named, killed, and fail the module."""
    before = set(proc_table.ours())
    yield
    deadline = time.monotonic() + LEFTOVER_WAIT_S
    while True:
        left = {p: line for p, line in proc_table.ours().items() if p not in before}
        if not left or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    if left:
        proc_table.kill(left)
        gone_by = time.monotonic() + 30.0
        while any(proc_table.alive(p) for p in left) and time.monotonic() < gone_by:
            time.sleep(0.05)
        pytest.fail(f"{request.module.__name__} left {len(left)} process(es) running "
                    f"{LEFTOVER_WAIT_S:g} s after its last test (now killed): "
                    + "; ".join(f"pid {p.pid}: {line}" for p, line in sorted(left.items())),
                    pytrace=False)
