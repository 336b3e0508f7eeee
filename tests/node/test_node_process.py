"""Real run_node.py processes: kill -9, clean shutdown, restart, configuration."""
import signal

import pytest

from yaddb import Client
from yaddb.errors import ValueTooLarge
from tests.helpers import child_env, free_port, run_script


def test_kill_9_loses_no_acknowledged_write_and_restart_serves_it(tmp_path, processes):
    data = tmp_path / "data"
    node = processes.node(data, "--memtable-bytes", "4096")
    node.wait_ready()
    with Client(node.endpoint, timeout=10) as client:
        for i in range(300):
            client.set(b"key%03d" % i, b"value%d" % i)
        for i in range(0, 300, 7):
            assert client.delete(b"key%03d" % i)
        client.mset([(b"batch%d" % i, b"b%d" % i) for i in range(50)])
    assert node.kill(signal.SIGKILL) == -signal.SIGKILL
    node = processes.node(data, port=node.port)
    node.wait_ready()
    with Client(node.endpoint, timeout=10) as client:
        for i in range(300):
            item = client.get(b"key%03d" % i)
            assert (item is None) if i % 7 == 0 else (item.value == b"value%d" % i)
        assert [item.value for item in client.mget([b"batch%d" % i for i in range(50)])] == \
            [b"b%d" % i for i in range(50)]
        assert client.stats()["sequence"] == 300 + 43 + 50


def test_sigterm_stops_cleanly_and_a_restart_on_another_port_has_the_data(tmp_path, processes):
    data = tmp_path / "data"
    node = processes.node(data)
    node.wait_ready()
    with Client(node.endpoint, timeout=10) as client:
        client.set(b"k", b"v")
    assert node.stop() == 0
    assert "stopped" in node.log()
    node = processes.node(data)  # a new free port: the data belongs to the directory, not the port
    node.wait_ready()
    with Client(node.endpoint, timeout=10) as client:
        assert client.get(b"k").value == b"v"


def test_a_second_node_on_the_same_data_dir_exits_with_a_clear_error(tmp_path, processes):
    data = tmp_path / "data"
    first = processes.node(data)
    first.wait_ready()
    second = processes.node(data, log_path=tmp_path / "second.log")
    assert second.proc.wait(timeout=60) == 1
    assert "in use by another process" in second.log()
    with Client(first.endpoint, timeout=10) as client:
        assert client.ping()


def _run_node(args, cwd):
    return run_script("run_node.py", *args, cwd=cwd)


def test_help_names_every_flags_environment_variable(tmp_path):
    help_text = _run_node(["--help"], tmp_path).stdout
    for variable in ("YADDB_HOST", "YADDB_PORT", "YADDB_DATA_DIR", "YADDB_LOG_LEVEL", "YADDB_FSYNC",
                     "YADDB_MAX_VALUE_BYTES"):
        assert variable in help_text
    assert "YADDB_MASTER_HOST" in _run_node(["master", "--help"], tmp_path).stdout + \
        _run_node(["slave", "--help"], tmp_path).stdout


def test_settings_come_from_flags_then_environment_then_dotenv(tmp_path, processes):
    port = free_port()
    (tmp_path / ".env").write_text(f"YADDB_PORT={port}\nYADDB_FSYNC=never\nYADDB_DATA_DIR=from-dotenv\n"
                                   f"YADDB_PUB_PORT={free_port()}\n")  # not PORT+1: it may be taken
    env = child_env(YADDB_FSYNC="interval")  # the environment beats .env
    node = processes.node(tmp_path / "from-dotenv", port=port, env=env,
                          command=["--max-value-bytes", "100", "master"])  # a flag beats both
    node.wait_ready()
    with Client(node.endpoint, timeout=10, max_value_bytes=1000) as client:
        assert client.stats()["fsync"] == "interval"
        with pytest.raises(ValueTooLarge, match="limit is 100"):
            client.set(b"k", b"x" * 101)
    assert (tmp_path / "from-dotenv" / "MANIFEST").exists()


def test_a_slave_given_half_a_master_address_refuses_to_start(tmp_path):
    result = _run_node(["-p", str(free_port()), "--data-dir", str(tmp_path / "d"), "slave",
                        "--master-host", "127.0.0.1"], tmp_path)
    assert result.returncode == 2 and "--master-port" in result.stderr
