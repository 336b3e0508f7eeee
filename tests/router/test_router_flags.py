"""`run_router.py` flags as CONTRACT.md section 2 gives them: --help names every flag with its
YADDB_ variable and the documented defaults; flags come from a .env file, the environment and
the command line, in that order of strength (--nodes too); the embedded cluster's --partitions,
--slaves and --fsync; a data dir started with another --partitions is refused, naming both."""
from __future__ import annotations

import re
import urllib.request

from yaddb import Client
from yaddb.placement import partition_for
from tests.helpers import child_env, free_port, run_script, wait_for

EMBEDDED_FLAGS = ("--host", "--port", "--zmq-port", "--nodes", "--data-dir", "--partitions",
                  "--slaves", "--fsync", "--slave-fsync")
DEFAULTS = {"--port": "8080", "--zmq-port": "5555", "--host": "127.0.0.1",
            "--data-dir": "yaddb-data", "--partitions": "2", "--slaves": "1"}


def option_help(help_text: str) -> dict[str, str]:
    """--flag -> its help text (whitespace collapsed), from argparse's --help output."""
    blocks: dict[str, str] = {}
    flags: list[str] = []
    for line in help_text.splitlines():
        indent = len(line) - len(line.lstrip())
        if indent == 2 and line.lstrip().startswith("-"):
            invocation, _, text = line.strip().partition("  ")  # two spaces end the flags
            flags = re.findall(r"(?:^|[ ,])(--[a-z][a-z0-9-]*)", invocation)
            for flag in flags:
                blocks[flag] = text
        elif indent > 2 and flags:
            for flag in flags:
                blocks[flag] += " " + line.strip()
        else:
            flags = []
    return {flag: " ".join(text.split()) for flag, text in blocks.items()}


def variable(flag: str) -> str:
    return "YADDB_" + flag[2:].upper().replace("-", "_")


def test_help_lists_every_flag_with_its_variable_and_the_documented_defaults(tmp_path):
    result = run_script("run_router.py", "--help", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    options = option_help(result.stdout)
    assert set(EMBEDDED_FLAGS) <= set(options), f"missing: {set(EMBEDDED_FLAGS) - set(options)}"
    without = {flag: variable(flag) for flag, text in options.items()
               if flag != "--help" and variable(flag) not in text}
    assert not without, f"--help gives no variable for {without}"
    for flag, default in DEFAULTS.items():
        assert re.search(rf"\bdefault:? {re.escape(default)}\b", options[flag]), (flag, options[flag])


def test_flags_come_from_dotenv_then_the_environment_and_the_command_line_wins(tmp_path, processes):
    work = tmp_path / "work"
    work.mkdir()
    zmq_env, http_flag = free_port(), free_port()
    (work / ".env").write_text(f"YADDB_DATA_DIR=from-dotenv\nYADDB_SLAVES=0\n"
                               f"YADDB_ZMQ_PORT={free_port()}\nYADDB_PORT={free_port()}\n")
    env = child_env(YADDB_ZMQ_PORT=str(zmq_env), YADDB_PORT=str(free_port()))  # beats .env
    router = processes.router(work / "from-dotenv", zmq_port=zmq_env, http_port=http_flag, cwd=work,
                              env=env, command=["-p", str(http_flag)]).wait_ready()  # beats both
    assert f"native clients: tcp://127.0.0.1:{zmq_env}" in router.log()
    assert f"HTTP edge: http://127.0.0.1:{http_flag}" in router.log()
    with urllib.request.urlopen(f"http://127.0.0.1:{http_flag}/ping", timeout=10) as reply:
        assert reply.read() == b"PONG"
    with Client(router.endpoint, timeout=10) as client:
        keys = [client.set(b"dotenv%d" % i, b"v%d" % i) for i in range(20)]
        assert [item.value for item in client.mget(keys)] == [b"v%d" % i for i in range(20)]
        partitions = client.stats()["partitions"]
    assert [p["slaves"] for p in partitions] == [[], []]  # YADDB_SLAVES=0 from .env
    assert len(router.node_pids()) == 2
    assert router.stop() == 0
    assert len(list((work / "from-dotenv").rglob("MANIFEST"))) == 2  # both masters' data there


def error_text(log: str, *paths) -> str:
    """The router's error lines, message only (no time stamps), with paths taken out."""
    messages = []
    for line in log.splitlines():
        if " ERROR " in line:
            messages.append(line.split(" ERROR ", 1)[1].partition(": ")[2])
        elif "error: " in line:
            messages.append(line.split("error: ", 1)[1])
    text = " ".join(messages)
    for path in paths:
        text = text.replace(str(path), "DIR")
    return text


def test_partitions_places_keys_on_n_masters_and_another_count_is_refused(tmp_path, processes):
    data = tmp_path / "data"
    router = processes.router(data, "--partitions", "3", "--slaves", "0").wait_ready()
    assert len(router.node_pids()) == 3, router.log()[-3000:]
    with Client(router.endpoint, timeout=10) as client:
        keys = [client.set(b"part%d" % i, b"v%d" % i) for i in range(60)]
        masters = [p["master"] for p in client.stats()["partitions"]]
    assert len(masters) == 3
    for index, master in enumerate(masters):  # each master holds exactly its partition's keys
        with Client(f"tcp://{master}", timeout=10, direct=False, keys=str(data / "keys")) as direct:
            held = [key for key in keys if direct.get(key) is not None]
        assert held == [key for key in keys if partition_for(key, 3) == index]
    assert router.stop() == 0, router.log()[-3000:]

    refused = processes.router(data, "--partitions", "2", "--slaves", "0")
    assert refused.child.wait(60) not in (0, None), refused.log()[-3000:]
    message = error_text(refused.log(), data, tmp_path)
    assert "partition" in message and {"2", "3"} <= set(re.findall(r"\b\d+\b", message)), (
        f"the error should name both partition counts: {message!r}")

    router = processes.router(data, "--partitions", "3", "--slaves", "0").wait_ready()
    with Client(router.endpoint, timeout=10) as client:  # the refused start changed nothing
        assert [getattr(client.get(key), "value", None) for key in keys] == \
            [b"v%d" % i for i in range(60)]


def test_fsync_reaches_every_node_of_the_embedded_cluster(tmp_path, processes):
    data = tmp_path / "data"
    router = processes.router(data, "--fsync", "never", "--slave-fsync", "always").wait_ready()
    with Client(router.endpoint, timeout=10) as client:
        def every_node():  # the router learns the slaves from their masters
            partitions = client.stats()["partitions"]
            slaves = [s["address"] for p in partitions for s in p["slaves"]]
            return len(slaves) == 2 and ([p["master"] for p in partitions], slaves)
        masters, slaves = wait_for(every_node, "the router to list both slaves")
    for addresses, policy in ((masters, "never"), (slaves, "always")):
        for address in addresses:
            with Client(f"tcp://{address}", timeout=10, direct=False,
                        keys=str(data / "keys")) as direct:
                assert direct.stats()["fsync"] == policy, address


def test_nodes_come_from_the_environment_as_a_space_separated_list(tmp_path, processes):
    masters = [processes.node(tmp_path / f"node{i}") for i in range(2)]
    for master in masters:
        master.wait_ready()
    env = child_env(YADDB_NODES=" ".join(master.address for master in masters))
    router = processes.router(tmp_path / "unused", env=env).wait_ready()
    with Client(router.endpoint, timeout=10) as client:
        assert [p["master"] for p in client.stats()["partitions"]] == [m.address for m in masters]
        keys = [client.set(b"env%d" % i, b"v%d" % i) for i in range(40)]
    assert len(router.node_pids()) == 0  # no embedded cluster
    for index, master in enumerate(masters):
        with Client(master.endpoint, timeout=10, direct=False) as direct:
            held = [key for key in keys if direct.get(key) is not None]
        assert held == [key for key in keys if partition_for(key, 2) == index]
