"""The foreign programs the benchmarks need: redis-server with redis-py (our node's and
client's peer) and wrk (HTTP load); each installed when missing, from Debian with apt-get or,
for redis-py, with pip at the version pinned in bench/requirements.txt.
"""
from __future__ import annotations

import importlib
import importlib.util
import os
import re
import shutil
import subprocess
import sys
from typing import Optional

from common import LOCALHOST, REPO_ROOT, BenchError, Child, free_port, launch, wait_ready

REQUIREMENTS = os.path.join(REPO_ROOT, "bench", "requirements.txt")
INSTALL_TIMEOUT_S = 600  # for one apt-get or pip command


def pinned_version(package: str) -> Optional[str]:
    """The version of `package` pinned (==) in bench/requirements.txt, or None."""
    try:
        with open(REQUIREMENTS) as file:
            for line in file:
                match = re.match(r"\s*%s\s*==\s*([^\s#;]+)" % re.escape(package), line, re.I)
                if match:
                    return match.group(1)
    except OSError:
        pass
    return None


def run_install(argv: list[str]) -> bool:
    """Run one install command, showing it; True if it succeeded."""
    print("  $ " + " ".join(argv), flush=True)
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    try:
        done = subprocess.run(argv, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, timeout=INSTALL_TIMEOUT_S)
    except (OSError, subprocess.TimeoutExpired) as exc:
        print(f"    failed: {exc}")
        return False
    if done.returncode != 0:
        tail = done.stdout.decode(errors="replace").strip().splitlines()[-5:]
        print(f"    failed (exit {done.returncode}): {' | '.join(tail)}")
    return done.returncode == 0


def ensure_command(command: str, package: str) -> str:
    """The path of `command`, installing the Debian `package` when it is missing (running
    apt-get update first if a plain install fails); BenchError if that cannot be done."""
    if shutil.which(command) is None:
        print(f"{command} is missing; installing the Debian package {package}", flush=True)
        apt = shutil.which("apt-get")
        if apt is None:
            raise BenchError(f"{command} is not installed and apt-get is not available: "
                             f"install {package} by hand and run again")
        install = [apt, "install", "-y", "-q", package]
        if not run_install(install) and not (run_install([apt, "update", "-q"])
                                             and run_install(install)):
            raise BenchError(f"could not install {package} with apt-get (are you root? is the "
                             "Debian mirror reachable?); install it by hand")
        if shutil.which(command) is None:
            raise BenchError(f"apt-get installed {package} but {command} is not on PATH")
    return shutil.which(command)


def ensure_module(module: str) -> None:
    """Import `module`, pip-installing the version bench/requirements.txt pins if it is missing."""
    try:
        importlib.import_module(module)
        return
    except ImportError:
        pass
    version = pinned_version(module)
    spec = f"{module}=={version}" if version else module
    print(f"{module} is missing; installing {spec} with pip", flush=True)
    if not run_install([sys.executable, "-m", "pip", "install", "-q", spec]):
        raise BenchError(f"could not install {spec} with pip; run `pip install -r "
                         "bench/requirements.txt` by hand")
    importlib.invalidate_caches()
    try:
        importlib.import_module(module)
    except ImportError as exc:
        raise BenchError(f"pip installed {spec} but it does not import: {exc}") from None


def ensure_redis() -> None:
    """redis-server on PATH and redis-py importable, installing them if missing."""
    ensure_command("redis-server", "redis-server")
    ensure_module("redis")


def redis_available() -> bool:
    """Whether redis-server and redis-py are installed, without installing them."""
    return (shutil.which("redis-server") is not None
            and importlib.util.find_spec("redis") is not None)


def redis_client(port, timeout: Optional[float] = None):
    """redis-py on loopback TCP (`port` a number) or on a Unix socket (`port` its path)."""
    import redis
    if isinstance(port, str):
        return redis.Redis(unix_socket_path=port, socket_timeout=timeout,
                           socket_connect_timeout=timeout)
    return redis.Redis(host=LOCALHOST, port=port, socket_timeout=timeout,
                       socket_connect_timeout=timeout)


def redis_socket(workdir: str) -> str:
    """The Unix socket start_redis also listens on."""
    return os.path.join(workdir, "redis.sock")


def start_redis(workdir: str, appendfsync: str,
                cpus: Optional[set[int]] = None) -> tuple[Child, int]:
    """redis-server on a free port with its data in workdir/redis-data, persistence like our
    node's (append-only file fsynced `appendfsync`, no snapshots); (child, port) once it
    answers a ping."""
    port = free_port()
    data_dir = os.path.join(workdir, "redis-data")
    os.makedirs(data_dir, exist_ok=True)
    child = launch("redis", [shutil.which("redis-server"), "--port", str(port), "--bind", LOCALHOST,
                             "--dir", data_dir, "--save", "", "--appendonly", "yes",
                             "--appendfsync", appendfsync, "--daemonize", "no", "--logfile", "",
                             "--unixsocket", redis_socket(workdir), "--unixsocketperm", "700"],
                   workdir, ours=False, cpus=cpus)

    def ping() -> bool:
        client = redis_client(port, timeout=0.5)
        try:
            return client.ping()
        finally:
            client.close()

    wait_ready(child, ping)
    return child, port
