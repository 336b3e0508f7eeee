"""The `yaddb` command (yaddb/cli.py) as a user runs it, against a real one-command cluster:
values in and out byte for byte, a missing key and an unreachable endpoint as one line on
standard error with a non-zero exit, options from YADDB_* variables."""
import json
import subprocess
import sys

import pytest

from tests.helpers import REPO_ROOT, child_env


def yaddb(*argv, stdin=b"", env=None):
    return subprocess.run([sys.executable, "-m", "yaddb", *argv], input=stdin, cwd=REPO_ROOT,
                          env=env or child_env(), capture_output=True, timeout=60)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    from tests.helpers import Processes
    directory = tmp_path_factory.mktemp("cli")
    processes = Processes(directory)
    try:
        router = processes.router(directory / "data").wait_ready()
        yield router
    finally:
        processes.close()


def test_set_get_del_round_trip_byte_for_byte(cluster):
    e = ("-e", cluster.endpoint)
    assert yaddb(*e, "set", "greeting", "hello").stdout == b"OK\n"
    assert yaddb(*e, "get", "greeting").stdout == b"hello"  # not a terminal: no newline added
    binary = bytes(range(256)) * 4
    assert yaddb(*e, "set", "--hex", "00ff", stdin=binary).returncode == 0  # from stdin
    assert yaddb(*e, "get", "--hex", "00ff").stdout == binary
    deleted = yaddb(*e, "del", "greeting")
    assert deleted.returncode == 0 and deleted.stdout == b"deleted\n"
    assert yaddb(*e, "ping").stdout == b"PONG\n"


def test_a_missing_key_and_bad_input_are_one_line_and_an_exit_code(cluster):
    e = ("-e", cluster.endpoint)
    for argv in (("get", "never-set"), ("del", "never-set")):
        missing = yaddb(*e, *argv)
        assert missing.returncode == 1 and missing.stdout == b""
        assert missing.stderr == b"yaddb: no such key: never-set\n"
    bad_hex = yaddb(*e, "get", "--hex", "zz")
    assert bad_hex.returncode == 1 and bad_hex.stderr.count(b"\n") == 1 and b"not hex" in bad_hex.stderr
    bad_w = yaddb(*e, "set", "k", "v", "-w", "most")
    assert bad_w.returncode == 1 and bad_w.stderr.count(b"\n") == 1, bad_w.stderr
    assert yaddb(*e, "get", "k").returncode == 1  # nothing stored by the refused set


def test_an_unreachable_endpoint_says_so_in_one_line(tmp_path):
    from yaddb.supervisor import free_port
    gone = yaddb("-e", f"tcp://127.0.0.1:{free_port()}", "--timeout", "0.3", "ping")
    assert gone.returncode == 1 and gone.stderr.count(b"\n") == 1
    assert b"could not connect" in gone.stderr and b"Traceback" not in gone.stderr
    for garbage in (("-e", "garbage", "ping"), ("-e", "tcp://nohost", "get", "k"),
                    ("backup", "--node", "nohost", str(tmp_path / "b")),
                    ("backup", "--node", "127.0.0.1:99999", str(tmp_path / "b"))):
        refused = yaddb(*garbage)
        assert refused.returncode == 1 and refused.stderr.count(b"\n") == 1, refused.stderr
        assert b"host:port" in refused.stderr.lower() and b"Traceback" not in refused.stderr


def test_stats_as_a_table_and_as_json_and_options_from_the_environment(cluster):
    answer = json.loads(yaddb("-e", cluster.endpoint, "stats", "--json").stdout)
    nodes = [p["master"] for p in answer["partitions"]] + \
        [s["address"] for p in answer["partitions"] for s in p["slaves"]]
    table = yaddb(env=child_env(YADDB_ENDPOINT=cluster.endpoint), *["stats"]).stdout.decode()
    assert table.splitlines()[0].split() == ["partition", "node", "role", "up", "keys", "lag", "refused"]
    for node in nodes:
        assert node in table
    assert table.count(" master ") == 2 and table.count(" slave ") == len(nodes) - 2


def test_bench_times_sets_and_gets_and_really_writes(cluster):
    e = ("-e", cluster.endpoint)
    single = yaddb(*e, "bench", "-n", "200", "-c", "2", "-d", "7")
    assert single.returncode == 0, single.stderr
    lines = single.stdout.decode().splitlines()
    assert [line.split(":")[0] for line in lines] == ["SET", "GET"]
    for line in lines:
        assert "200 calls, 2 clients" in line and "p99.9" in line
        assert float(line.split(": ")[1].split(" ops/s")[0].replace(",", "")) > 0
    assert yaddb(*e, "get", "bench:199").stdout == b"x" * 7
    batched = yaddb(*e, "bench", "-n", "300", "-P", "100", "-d", "3", "-t", "set")
    assert batched.stdout.decode().startswith("MSET of 100: ") and "3 calls" in batched.stdout.decode()
    assert yaddb(*e, "get", "bench:299").stdout == b"x" * 3
    # Every subcommand's options from YADDB_<COMMAND>_<OPTION> too (click's auto_envvar_prefix).
    from_env = yaddb(env=child_env(YADDB_ENDPOINT=cluster.endpoint, YADDB_BENCH_REQUESTS="40",
                                   YADDB_BENCH_TESTS="set", YADDB_BENCH_DATA_SIZE="5"), *["bench"])
    assert from_env.stdout.decode().startswith("SET: ") and "40 calls" in from_env.stdout.decode()
    assert yaddb(*e, "get", "bench:39").stdout == b"x" * 5
    refused = yaddb(*e, "bench", "-t", "set,scan")
    assert refused.returncode == 1 and b"scan" in refused.stderr and refused.stderr.count(b"\n") == 1


def test_the_http_edge_with_url_does_what_the_endpoint_does(cluster):
    u = ("--url", cluster.url)
    assert yaddb(*u, "ping").stdout == b"PONG\n"
    assert yaddb(*u, "set", "via-http", "hello").stdout == b"OK\n"
    assert yaddb("-e", cluster.endpoint, "get", "via-http").stdout == b"hello"  # the same data
    binary = bytes(range(256))
    assert yaddb(*u, "set", "--hex", "beef01", stdin=binary).returncode == 0
    assert yaddb(*u, "get", "--hex", "beef01").stdout == binary
    assert yaddb("-e", cluster.endpoint, "get", "--hex", "beef01").stdout == binary
    assert yaddb(*u, "del", "via-http").stdout == b"deleted\n"
    missing = yaddb(*u, "get", "via-http")
    assert missing.returncode == 1 and missing.stderr == b"yaddb: no such key: via-http\n"
    assert b" master " in yaddb(*u, "stats").stdout
    bench = yaddb(*u, "bench", "-n", "40", "-c", "2")
    assert bench.returncode == 0 and bench.stdout.decode().startswith("SET: "), bench.stderr
    no_batches = yaddb(*u, "bench", "-P", "10")
    assert no_batches.returncode == 1 and b"--endpoint" in no_batches.stderr
    from yaddb.supervisor import free_port
    gone = yaddb("--url", f"http://127.0.0.1:{free_port()}", "ping")
    assert gone.returncode == 1 and gone.stderr.count(b"\n") == 1 and b"cannot reach" in gone.stderr
