"""`python3 -m pip install .` (CONTRACT.md section 9): a fresh virtual environment gets the
commands yaddb, yaddb-node and yaddb-router, and the installed router's one-command cluster
serves from a directory far from the source tree.

The environment sees the installed dependencies (--system-site-packages), and without a pip
of its own (--without-pip) it builds with the pinned setuptools (--no-build-isolation; a
venv's bundled one may be too old to build wheels), so the test needs no network."""
import shutil
import subprocess
import sys

import pytest

from yaddb import Client
from yaddb.supervisor import free_port
from tests.helpers import REPO_ROOT, child_env, wait_for


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """The bin folder of a virtual environment where the package is installed."""
    work = tmp_path_factory.mktemp("package")
    source = work / "source"  # a copy: building writes build/ and *.egg-info next to the sources
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO_ROOT / name, source / name)
    shutil.copytree(REPO_ROOT / "yaddb", source / "yaddb",
                    ignore=shutil.ignore_patterns("__pycache__"))
    venv = work / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", "--without-pip", str(venv)],
                   check=True, timeout=120)
    env = {k: v for k, v in child_env().items() if k != "PYTHONPATH"}
    install = subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "--no-deps",
                              "--no-build-isolation", "--no-index", "-q", str(source)],
                             cwd=work, env=env, capture_output=True, text=True, timeout=300)
    assert install.returncode == 0, install.stdout + install.stderr
    return venv / "bin", env


def run(installed, *argv, cwd):
    bin_dir, env = installed
    return subprocess.run([str(bin_dir / argv[0]), *argv[1:]], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=60)


def test_the_three_commands_are_installed(installed, tmp_path):
    bin_dir, _ = installed
    node = run(installed, "yaddb-node", "--help", cwd=tmp_path)
    assert node.returncode == 0 and "--keys-dir" in node.stdout and "master" in node.stdout
    router = run(installed, "yaddb-router", "--help", cwd=tmp_path)
    assert router.returncode == 0 and "--nodes" in router.stdout
    keygen = run(installed, "yaddb", "keygen", str(tmp_path / "keys"), cwd=tmp_path)
    assert keygen.returncode == 0, keygen.stderr
    assert sorted(p.name for p in (tmp_path / "keys").iterdir()) == [
        "client-1.key", "client-1.key_secret", "member.key", "member.key_secret"]
    as_module = subprocess.run([str(bin_dir / "python"), "-m", "yaddb", "keygen", "--help"],
                               cwd=tmp_path, env=installed[1], capture_output=True, text=True,
                               timeout=60)
    assert as_module.returncode == 0 and "--clients" in as_module.stdout
    imported = subprocess.run([str(bin_dir / "python"), "-c", "import yaddb; print(yaddb.__file__)"],
                              cwd=tmp_path, env=installed[1], capture_output=True, text=True,
                              timeout=60)
    assert str(bin_dir.parent) in imported.stdout  # the installed copy, not the source tree


def test_the_installed_router_runs_the_one_command_cluster(installed, tmp_path, processes):
    bin_dir, env = installed
    zmq_port, http_port = free_port(), free_port()
    router = processes.child("installed router", [
        str(bin_dir / "yaddb-router"), "--zmq-port", str(zmq_port), "-p", str(http_port),
        "--data-dir", str(tmp_path / "data")], log_path=str(tmp_path / "router.log"), env=env,
        cwd=str(tmp_path))
    log = lambda: (tmp_path / "router.log").read_text(errors="replace")
    wait_for(lambda: "native clients: " in log() or not router.running,
             "the installed router to start", 60)
    assert router.running, log()[-3000:]
    with Client(f"tcp://127.0.0.1:{zmq_port}", timeout=10, keys=str(tmp_path / "data" / "keys")) as client:
        written = client.mset({b"k%d" % i: b"v%d" % i for i in range(20)})
        assert [item.value for item in client.mget(written)] == [b"v%d" % i for i in range(20)]
        assert len(client.stats()["partitions"]) == 2
