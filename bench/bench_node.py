#!/usr/bin/env python3
"""Benchmark a YADDB storage node (run_node.py + yaddb.Client) against redis-server + redis-py.

One run starts, for each durability pair, a fresh node and a fresh redis-server on free ports
of 127.0.0.1, each in its own temporary directory, and measures the same workloads on both:

    pair       our node          redis-server
    interval   --fsync interval  --appendonly yes --appendfsync everysec
    always     --fsync always    --appendonly yes --appendfsync always

    sync      one request at a time: N sets, then N gets in random order (per-op p50/p99)
    batched   10N keys: our mset/mget of 100 keys vs a redis-py pipeline (transaction=False)
              of 100 sets, then of 100 gets (p50/p99 per batch)
    clients   C client processes (spawned), each 4N/C sync sets then 4N/C gets of its own
              keys, at once; aggregate ops/s

Each workload runs --repeat rounds alternating ours and redis, on fresh keys; the best round
counts. Keys are the 16-byte MurmurHash3 of str(i), values 100 bytes. A bare pyzmq
DEALER/ROUTER echo (a server process with a dict behind it) shows what the transport alone
allows. By default sync and echo run with the servers on the last CPU and the client on
the others, which makes their latencies stable (--pin; see choose_cpus).
It installs redis-server (apt-get) and redis-py (pip, the version pinned in
bench/requirements.txt) when they are missing. This is a benchmark, not a test: it reports
figures and the goals' PASS/MISS, and exits non-zero only if something failed.
"""
import argparse
import importlib
import json
import multiprocessing
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from time import perf_counter_ns

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO_ROOT not in sys.path:
    sys.path.insert(0, REPO_ROOT)

REQUIREMENTS = os.path.join(REPO_ROOT, "bench", "requirements.txt")
VALUE_SIZE = 100
BATCH = 100
BATCHED_FACTOR = 10           # the batched workload writes and reads 10x --ops keys
CLIENTS_FACTOR = 4            # the concurrent clients write 4x --ops keys between them
WARMUP_OPS = 300
CLIENT_TIMEOUT = 2.0          # seconds, for every request of ours and of redis-py
START_TIMEOUT = 20.0          # seconds for a server to answer its first ping
STOP_TIMEOUT = 10.0           # seconds between SIGTERM and SIGKILL
INSTALL_TIMEOUT = 600         # seconds for one apt-get or pip command
ECHO_MAX_LIFETIME = 900.0     # the echo server stops by itself after this, whatever happens

# our --fsync -> redis --appendfsync
PAIRS = {"interval": "everysec", "always": "always"}
# (workload, goal ratio ours/redis, what is compared)
GOALS = (("sync", 1.0, "sync set+get >= 1.0x redis-py"),
         ("batched", 1.0, "batched mset/mget >= 1.0x redis pipeline"),
         ("clients", 0.7, "{clients} clients >= 0.7x redis-py"))

# Key ranges, so no workload reads or overwrites another's keys (client c: CLIENTS_BASE +
# c * 1M); round r of a workload adds r * ROUND_KEYS.
SYNC_BASE, BATCH_BASE, CLIENTS_BASE, WARMUP_BASE = 0, 10_000_000, 20_000_000, 90_000_000
ROUND_KEYS = 100_000_000
PINNED_WORKLOADS = {"sync"}   # run with the servers and the client on CPUs apart (--pin split)
MAX_OPS = 200_000


class BenchError(Exception):
    """Something that stops the benchmark, said for a person."""


# --------------------------------------------------------------------------
# Installing redis-server and redis-py
# --------------------------------------------------------------------------

def pinned_version(package):
    """The version of `package` pinned (==) in bench/requirements.txt, or None."""
    try:
        with open(REQUIREMENTS) as f:
            for line in f:
                m = re.match(r"\s*%s\s*==\s*([^\s#;]+)" % re.escape(package), line, re.I)
                if m:
                    return m.group(1)
    except OSError:
        pass
    return None


def _run_install(argv):
    print("  $ " + " ".join(argv), flush=True)
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    try:
        done = subprocess.run(argv, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, timeout=INSTALL_TIMEOUT)
    except (OSError, subprocess.TimeoutExpired) as exc:
        print("    failed: %s" % exc)
        return False
    if done.returncode != 0:
        tail = done.stdout.decode(errors="replace").strip().splitlines()[-5:]
        print("    failed (exit %d): %s" % (done.returncode, " | ".join(tail)))
    return done.returncode == 0


def ensure_installed():
    """redis-server on PATH and redis-py importable, installing them if missing."""
    for module in ("zmq", "msgpack", "mmh3"):  # the project's own, from requirements.txt
        try:
            importlib.import_module(module)
        except ImportError:
            raise BenchError("%s does not import: run `pip install -r requirements.txt` first"
                             % module) from None
    if shutil.which("redis-server") is None:
        print("redis-server is missing; installing the Debian package redis-server")
        apt = shutil.which("apt-get")
        if apt is None:
            raise BenchError("redis-server is not installed and apt-get is not available: "
                             "install redis-server by hand and run again")
        install = [apt, "install", "-y", "-q", "redis-server"]
        if not _run_install(install):
            if not (_run_install([apt, "update", "-q"]) and _run_install(install)):
                raise BenchError("could not install redis-server with apt-get (are you root? "
                                 "is the Debian mirror reachable?); install it by hand")
        if shutil.which("redis-server") is None:
            raise BenchError("apt-get installed redis-server but it is not on PATH")
    try:
        importlib.import_module("redis")
    except ImportError:
        version = pinned_version("redis")
        spec = "redis==%s" % version if version else "redis"
        print("redis-py is missing; installing %s with pip" % spec)
        if not _run_install([sys.executable, "-m", "pip", "install", "-q", spec]):
            raise BenchError("could not install %s with pip; run `pip install -r "
                             "bench/requirements.txt` by hand" % spec)
        importlib.invalidate_caches()
        try:
            importlib.import_module("redis")
        except ImportError as exc:
            raise BenchError("pip installed %s but it does not import: %s" % (spec, exc))


# --------------------------------------------------------------------------
# Servers: our node and redis-server, each a subprocess in a temp directory
# --------------------------------------------------------------------------

def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# CPUs for the servers and for the clients (this process and the processes it spawns);
# None leaves placement to the kernel. See choose_cpus().
SERVER_CPUS = CLIENT_CPUS = None


def choose_cpus(pin):
    """--pin split: the servers get the last CPU, the clients the others, for the workloads
    of one request at a time (sync, echo); the others run under kernel_placement.

    On a small VM a round trip between two processes costs about 30 us when both run on one
    CPU and about 110 us when the kernel wakes the other CPU; unpinned, which one a request
    gets is chance, and redis (one thread) wins it more often than our node and client (a
    Python thread and a ZeroMQ I/O thread each). Split placement is stable and is what a
    deployment has: clients on other cores or hosts than the server.
    """
    global SERVER_CPUS, CLIENT_CPUS
    cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    if pin == "split" and len(cpus) >= 2:
        SERVER_CPUS, CLIENT_CPUS = {cpus[-1]}, set(cpus[:-1])
        os.sched_setaffinity(0, CLIENT_CPUS)  # before any thread (zmq's I/O threads) starts


class server_placement:
    """Processes started inside `with server_placement():` inherit the servers' CPUs."""

    def __enter__(self):
        if SERVER_CPUS:
            os.sched_setaffinity(0, SERVER_CPUS)  # this thread only; a fork inherits it

    def __exit__(self, *exc):
        if SERVER_CPUS:
            os.sched_setaffinity(0, CLIENT_CPUS)


def set_tree_affinity(pid, cpus):
    """Every thread of process `pid` and of its descendants (the node's worker processes)."""
    try:
        tids = os.listdir("/proc/%d/task" % pid)
    except OSError:  # gone
        return
    for tid in tids:
        try:
            os.sched_setaffinity(int(tid), cpus)
            with open("/proc/%d/task/%s/children" % (pid, tid)) as f:
                children = f.read().split()
        except OSError:
            children = []
        for child in children:
            set_tree_affinity(int(child), cpus)


class kernel_placement:
    """Inside `with kernel_placement(servers):` the servers, this thread and the processes it
    starts may run on every CPU: for throughput workloads, where the concurrent clients need
    more than one CPU and our node's flush and merge worker processes want a CPU of their own
    (pinned beside the node, they cut its batched writes by about a third)."""

    def __init__(self, servers):
        self.servers = servers

    def __enter__(self):
        if SERVER_CPUS:
            every = SERVER_CPUS | CLIENT_CPUS
            for server in self.servers:
                set_tree_affinity(server.pid, every)
            os.sched_setaffinity(0, every)

    def __exit__(self, *exc):
        if SERVER_CPUS:
            for server in self.servers:
                set_tree_affinity(server.pid, SERVER_CPUS)
            os.sched_setaffinity(0, CLIENT_CPUS)


def cpu_seconds(pid):
    """User + system CPU time of process `pid` so far (its threads, not its children)."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return 0.0


class Server:
    """A server subprocess with its log in `workdir`; stop() is safe to call twice."""

    def __init__(self, name, argv, workdir, ping, cwd=None):
        self.name, self.argv, self.workdir, self.ping, self.cwd = name, argv, workdir, ping, cwd
        self.log_path = os.path.join(workdir, "%s.log" % name)
        self.proc = None
        self.exit_code = None

    def start(self):
        with open(self.log_path, "wb") as log, server_placement():
            # A session of its own: Ctrl-C reaches only us, and we stop it in order.
            self.proc = subprocess.Popen(self.argv, cwd=self.cwd, stdin=subprocess.DEVNULL,
                                         stdout=log, stderr=subprocess.STDOUT,
                                         start_new_session=True)
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            if self.proc.poll() is not None:
                raise BenchError("%s exited with code %s at start:\n%s"
                                 % (self.name, self.proc.returncode, self.log_tail()))
            try:
                if self.ping():
                    return self
            except Exception:  # not up yet
                pass
            if time.monotonic() > deadline:
                raise BenchError("%s did not answer within %.0f s:\n%s"
                                 % (self.name, START_TIMEOUT, self.log_tail()))
            time.sleep(0.1)

    @property
    def pid(self):
        return self.proc.pid if self.proc else None

    def log_tail(self, lines=15):
        try:
            with open(self.log_path, "rb") as f:
                return "\n".join(f.read().decode(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def stop(self):
        if self.proc is None or self.exit_code is not None:
            return self.exit_code
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                print("  %s ignored SIGTERM for %.0f s; killing it" % (self.name, STOP_TIMEOUT))
                self.proc.kill()
                self.proc.wait(STOP_TIMEOUT)
        self.exit_code = self.proc.returncode
        return self.exit_code


def start_node(stack, fsync, workdir):
    from yaddb import Client
    port = free_port()
    endpoint = "tcp://127.0.0.1:%d" % port

    def ping():
        with Client(endpoint, timeout=0.5) as c:
            return c.ping()

    data_dir = os.path.join(workdir, "node-data")
    argv = [sys.executable, os.path.join(REPO_ROOT, "run_node.py"), "-p", str(port),
            "--data-dir", data_dir, "--fsync", fsync, "--log-level", "WARNING", "master"]
    server = Server("node", argv, workdir, ping, cwd=REPO_ROOT)
    stack.callback(server.stop)
    server.start()
    server.port = port
    return server


def start_redis(stack, appendfsync, workdir):
    import redis
    port = free_port()

    def ping():
        r = redis.Redis(host="127.0.0.1", port=port, socket_timeout=0.5)
        try:
            return r.ping()
        finally:
            r.close()

    data_dir = os.path.join(workdir, "redis-data")
    os.makedirs(data_dir)
    argv = [shutil.which("redis-server"), "--port", str(port), "--bind", "127.0.0.1",
            "--dir", data_dir, "--save", "", "--appendonly", "yes",
            "--appendfsync", appendfsync, "--daemonize", "no", "--logfile", ""]
    server = Server("redis", argv, workdir, ping)
    stack.callback(server.stop)
    server.start()
    server.port = port
    return server


# --------------------------------------------------------------------------
# Stores: the same four calls on each system
# --------------------------------------------------------------------------

class OursStore:
    name = "ours"

    def __init__(self, port):
        from yaddb import Client
        self.client = Client("tcp://127.0.0.1:%d" % port, timeout=CLIENT_TIMEOUT)
        self.set, self.get = self.client.set, self.client.get
        self.mset, self.mget = self.client.mset, self.client.mget

    def value(self, key):
        item = self.client.get(key)
        return None if item is None else item.value

    def close(self):
        self.client.close()


class RedisStore:
    name = "redis"

    def __init__(self, port):
        import redis
        self.r = redis.Redis(host="127.0.0.1", port=port, socket_timeout=CLIENT_TIMEOUT,
                             socket_connect_timeout=CLIENT_TIMEOUT)
        self.set, self.get = self.r.set, self.r.get

    def mset(self, pairs):
        pipe = self.r.pipeline(transaction=False)
        for key, value in pairs:
            pipe.set(key, value)
        pipe.execute()

    def mget(self, keys):
        pipe = self.r.pipeline(transaction=False)
        for key in keys:
            pipe.get(key)
        return pipe.execute()

    def value(self, key):
        return self.r.get(key)

    def close(self):
        self.r.close()


class EchoStore:
    """A DEALER to echo_server: set/get with the fewest bytes the transport needs."""
    name = "echo"

    def __init__(self, port):
        import zmq
        self.ctx = zmq.Context.instance()
        self.sock = self.ctx.socket(zmq.DEALER)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.setsockopt(zmq.RCVTIMEO, int(CLIENT_TIMEOUT * 1000))
        self.sock.connect("tcp://127.0.0.1:%d" % port)
        send, recv = self.sock.send_multipart, self.sock.recv_multipart

        def set_(key, value):
            send([b"s", key, value])
            recv()

        def get(key):
            send([b"g", key])
            frames = recv()
            return frames[1] if len(frames) > 1 else None

        self.set = set_
        self.get = self.value = get

    def close(self):
        self.sock.close()


def echo_server(port, stop):
    """A ROUTER with a dict behind it; runs in its own (spawned) process."""
    import zmq
    ctx = zmq.Context()
    sock = ctx.socket(zmq.ROUTER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.RCVTIMEO, 100)
    sock.bind("tcp://127.0.0.1:%d" % port)
    data = {}
    recv, send = sock.recv_multipart, sock.send_multipart
    give_up = time.monotonic() + ECHO_MAX_LIFETIME
    try:
        while not stop.is_set() and time.monotonic() < give_up:
            try:
                frames = recv()
            except zmq.Again:
                continue
            if frames[1] == b"s":
                data[frames[2]] = frames[3]
                send([frames[0], b"1"])
            else:
                value = data.get(frames[2])
                send([frames[0], b"1", value] if value is not None else [frames[0], b"0"])
    finally:
        sock.close()
        ctx.term()


STORES = {"ours": OursStore, "redis": RedisStore, "echo": EchoStore}


# --------------------------------------------------------------------------
# Data and figures
# --------------------------------------------------------------------------

def make_keys(base, n):
    import mmh3
    return [mmh3.hash_bytes(str(i).encode()) for i in range(base, base + n)]


def make_values(base, n):
    """100-byte windows of a random pool, each at its own offset (613 is prime to 60000)."""
    pool = random.Random(base).randbytes(1 << 16)
    return [pool[(i * 613) % 60000:(i * 613) % 60000 + VALUE_SIZE] for i in range(n)]


def percentile(sorted_ns, q):
    if not sorted_ns:
        return 0.0
    return sorted_ns[min(len(sorted_ns) - 1, int(q * len(sorted_ns)))] / 1000.0


def figures(ops, elapsed_ns, latencies_ns=None):
    """ops/s, and p50/p99 in microseconds of the given latencies (per op or per batch)."""
    out = {"ops": ops, "seconds": round(elapsed_ns / 1e9, 4),
           "ops_per_s": round(ops / (elapsed_ns / 1e9), 1) if elapsed_ns else 0.0}
    if latencies_ns:
        lat = sorted(latencies_ns)
        out["p50_us"] = round(percentile(lat, 0.50), 1)
        out["p99_us"] = round(percentile(lat, 0.99), 1)
    return out


def combined(a, b):
    """Two phases run one after the other, as one figure (no latency percentiles)."""
    return figures(a["ops"] + b["ops"], int((a["seconds"] + b["seconds"]) * 1e9))


class Deadline:
    def __init__(self, seconds, what):
        self.at = perf_counter_ns() + int(seconds * 1e9)
        self.seconds, self.what = seconds, what

    def check(self):
        if perf_counter_ns() > self.at:
            raise BenchError("%s took over %.0f s; stopped" % (self.what, self.seconds))


def warm_up(store):
    keys, values = make_keys(WARMUP_BASE, WARMUP_OPS), make_values(WARMUP_BASE, WARMUP_OPS)
    for key, value in zip(keys, values):
        store.set(key, value)
        store.get(key)


def verify(store, keys, values, sample=200):
    """Read back a sample, outside timing: a benchmark of wrong answers is worthless."""
    rng = random.Random(len(keys))
    for i in rng.sample(range(len(keys)), min(sample, len(keys))):
        got = store.value(keys[i])
        if got != values[i]:
            raise BenchError("%s: key #%d read back %r, not the value written"
                             % (store.name, i, got if got is None else got[:20] + b"..."))


# --------------------------------------------------------------------------
# Workloads: each takes a connected store and returns its figures
# --------------------------------------------------------------------------

def sync_workload(store, n, max_seconds, base=SYNC_BASE):
    """N sets, then N gets in random order, one request at a time; per-op latency."""
    keys, values = make_keys(base, n), make_values(base, n)
    order = list(range(n))
    random.Random(n).shuffle(order)
    warm_up(store)
    deadline = Deadline(max_seconds, "%s sync" % store.name)
    set_, get = store.set, store.get
    set_lat = [0] * n
    start = perf_counter_ns()
    for i in range(n):
        t0 = perf_counter_ns()
        set_(keys[i], values[i])
        set_lat[i] = perf_counter_ns() - t0
        if not i & 255:
            deadline.check()
    mid = perf_counter_ns()
    get_lat = [0] * n
    misses = 0
    for j, i in enumerate(order):
        t0 = perf_counter_ns()
        got = get(keys[i])
        get_lat[j] = perf_counter_ns() - t0
        if got is None:
            misses += 1
        if not j & 255:
            deadline.check()
    end = perf_counter_ns()
    if misses:
        raise BenchError("%s sync: %d of %d gets found nothing" % (store.name, misses, n))
    verify(store, keys, values)
    out = {"set": figures(n, mid - start, set_lat), "get": figures(n, end - mid, get_lat)}
    out["total"] = combined(out["set"], out["get"])
    return out


def batched_workload(store, n, max_seconds, base=BATCH_BASE):
    """N keys set in batches of BATCH, then read in batches in random order; per-batch latency."""
    keys, values = make_keys(base, n), make_values(base, n)
    pairs = list(zip(keys, values))
    set_batches = [pairs[i:i + BATCH] for i in range(0, n, BATCH)]
    shuffled = keys[:]
    random.Random(n).shuffle(shuffled)
    get_batches = [shuffled[i:i + BATCH] for i in range(0, n, BATCH)]
    warm_up(store)
    store.mset(set_batches[0][:10])
    store.mget(get_batches[0][:10])
    deadline = Deadline(max_seconds, "%s batched" % store.name)
    mset, mget = store.mset, store.mget
    set_lat, get_lat = [], []
    start = perf_counter_ns()
    for batch in set_batches:
        t0 = perf_counter_ns()
        mset(batch)
        set_lat.append(perf_counter_ns() - t0)
        deadline.check()
    mid = perf_counter_ns()
    misses = 0
    for batch in get_batches:
        t0 = perf_counter_ns()
        got = mget(batch)
        get_lat.append(perf_counter_ns() - t0)
        misses += got.count(None)
        deadline.check()
    end = perf_counter_ns()
    if misses:
        raise BenchError("%s batched: %d of %d gets found nothing" % (store.name, misses, n))
    verify(store, keys, values)
    out = {"set": figures(n, mid - start, set_lat), "get": figures(n, end - mid, get_lat)}
    out["total"] = combined(out["set"], out["get"])
    return out


def client_process(kind, port, base, count, max_seconds, barrier, results):
    """One of the concurrent clients (a spawned process): sync sets, then gets, of its keys."""
    try:
        store = STORES[kind](port)
        keys, values = make_keys(base, count), make_values(base, count)
        order = list(range(count))
        random.Random(base).shuffle(order)
        store.get(keys[0])  # connected
        barrier.wait(60)
        deadline = Deadline(max_seconds, "%s client" % kind)
        set_, get = store.set, store.get
        lat = []
        start = time.monotonic_ns()  # system-wide clock: comparable across the processes
        for i in range(count):
            t0 = perf_counter_ns()
            set_(keys[i], values[i])
            lat.append(perf_counter_ns() - t0)
            if not i & 255:
                deadline.check()
        misses = 0
        for j, i in enumerate(order):
            t0 = perf_counter_ns()
            if get(keys[i]) is None:
                misses += 1
            lat.append(perf_counter_ns() - t0)
            if not j & 255:
                deadline.check()
        end = time.monotonic_ns()
        store.close()
        results.put({"start": start, "end": end, "ops": 2 * count, "misses": misses, "lat": lat})
    except BaseException as exc:  # reported by the parent
        results.put({"error": "%s: %s" % (type(exc).__name__, exc)})


def clients_workload(kind, port, clients, per_client, max_seconds, base=CLIENTS_BASE):
    """`clients` processes at once, each set+get of `per_client` keys of its own."""
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(clients)
    results = ctx.Queue()
    procs = [ctx.Process(target=client_process, daemon=True,
                         args=(kind, port, base + c * 1_000_000, per_client, max_seconds,
                               barrier, results))
             for c in range(clients)]
    got = []
    try:
        for p in procs:
            p.start()
        give_up = time.monotonic() + 60 + max_seconds
        while len(got) < clients:
            remaining = give_up - time.monotonic()
            if remaining <= 0:
                raise BenchError("%s clients: only %d of %d reported in time"
                                 % (kind, len(got), clients))
            try:
                got.append(results.get(timeout=min(remaining, 1.0)))
            except Exception:  # queue.Empty: look whether a client died without reporting
                if all(not p.is_alive() for p in procs) and results.empty():
                    raise BenchError("%s clients: %d of %d died without a report"
                                     % (kind, clients - len(got), clients))
    finally:
        for p in procs:
            p.join(5)
        for p in procs:
            if p.is_alive():
                p.terminate()
                p.join(5)
    errors = [r["error"] for r in got if "error" in r]
    if errors:
        raise BenchError("%s clients failed: %s" % (kind, "; ".join(sorted(set(errors)))))
    misses = sum(r["misses"] for r in got)
    if misses:
        raise BenchError("%s clients: %d gets found nothing" % (kind, misses))
    elapsed = max(r["end"] for r in got) - min(r["start"] for r in got)
    lat = [x for r in got for x in r["lat"]]
    return {"total": figures(sum(r["ops"] for r in got), elapsed, lat)}


# --------------------------------------------------------------------------
# Runner and report
# --------------------------------------------------------------------------

def best_round(rounds):
    """The round with the most ops/s; the JSON keeps every round's ops/s beside it."""
    best = dict(max(rounds, key=lambda figs: figs["total"]["ops_per_s"]))
    best["rounds_ops_per_s"] = [figs["total"]["ops_per_s"] for figs in rounds]
    return best


def run_pair(fsync, n, args):
    """Fresh node and redis with matching persistence; every workload on both, in rounds
    that alternate ours and redis, each round on keys of its own."""
    appendfsync = PAIRS[fsync]
    print("\n== our node --fsync %s  vs  redis-server --appendfsync %s  (N=%d, best of %d) =="
          % (fsync, appendfsync, n, args.repeat), flush=True)
    out = {"fsync": fsync, "appendfsync": appendfsync, "ops": n, "workloads": {}}
    with ExitStack() as stack:
        workdir = tempfile.mkdtemp(prefix="yaddb-bench-node-")
        stack.callback(shutil.rmtree, workdir, True)
        node = start_node(stack, fsync, workdir)
        red = start_redis(stack, appendfsync, workdir)
        out["pids"] = {"ours": node.pid, "redis": red.pid}
        ours, theirs = OursStore(node.port), RedisStore(red.port)
        stack.callback(ours.close)
        stack.callback(theirs.close)
        servers = {"ours": node, "redis": red}
        per_client = max(1, CLIENTS_FACTOR * n // args.clients)
        steps = (
            ("sync", lambda s, off: sync_workload(s, n, args.max_seconds, SYNC_BASE + off)),
            ("batched", lambda s, off: batched_workload(s, BATCHED_FACTOR * n, args.max_seconds,
                                                        BATCH_BASE + off)),
            ("clients", lambda s, off: clients_workload(s.name, servers[s.name].port,
                                                        args.clients, per_client,
                                                        args.max_seconds, CLIENTS_BASE + off)),
        )
        try:
            run_steps(steps, ours, theirs, servers, args, out)
        except Exception as exc:  # a server died or failed: say which, with its log
            if isinstance(exc, BenchError):
                raise
            logs = "".join("\n%s log (exit code %s):\n%s\n" % (srv.name, srv.proc.poll(),
                                                                srv.log_tail())
                           for srv in servers.values())
            raise BenchError("%s: %s%s" % (type(exc).__name__, exc, logs)) from exc
        out["node_stats"] = ours.client.stats()
        ours.close()
        theirs.close()
        out["node_exit_code"] = node.stop()
        out["redis_exit_code"] = red.stop()
    return out


def run_steps(steps, ours, theirs, servers, args, out):
    """Each workload in rounds, alternating ours and redis; the best round of each counts."""
    for name, run in steps:
        rounds = {"ours": [], "redis": []}
        for r in range(args.repeat):
            for store in (ours, theirs):
                print("  %-8s %-5s round %d ..." % (name, store.name, r + 1), end=" ", flush=True)
                pid = servers[store.name].pid
                with ExitStack() as placement:
                    if name not in PINNED_WORKLOADS:
                        placement.enter_context(kernel_placement(servers.values()))
                    cpu_before = cpu_seconds(pid)
                    figs = run(store, r * ROUND_KEYS)
                    cpu = cpu_seconds(pid) - cpu_before
                total = figs["total"]
                # server CPU per op, warm-up included (small against the workload)
                total["server_cpu_us_per_op"] = round(cpu / total["ops"] * 1e6, 1)
                rounds[store.name].append(figs)
                print("%10.0f ops/s" % total["ops_per_s"], flush=True)
        out["workloads"][name] = {k: best_round(v) for k, v in rounds.items()}


def run_echo(n, args):
    """The pyzmq echo server with sync set/get: the transport's own ceiling."""
    print("\n== bare pyzmq DEALER/ROUTER echo, dict behind it (N=%d, best of %d) =="
          % (n, args.repeat), flush=True)
    ctx = multiprocessing.get_context("spawn")
    stop = ctx.Event()
    port = free_port()
    proc = ctx.Process(target=echo_server, args=(port, stop), daemon=True)
    with server_placement():
        proc.start()
    try:
        store = EchoStore(port)
        try:
            rounds = []
            for r in range(args.repeat):
                print("  sync     echo  round %d ..." % (r + 1), end=" ", flush=True)
                rounds.append(sync_workload(store, n, args.max_seconds, SYNC_BASE + r * ROUND_KEYS))
                print("%10.0f ops/s" % rounds[-1]["total"]["ops_per_s"], flush=True)
            return best_round(rounds)
        finally:
            store.close()
    finally:
        stop.set()
        proc.join(5)
        if proc.is_alive():
            proc.terminate()
            proc.join(5)


def ratio(ours, theirs):
    return ours / theirs if theirs else 0.0


def lat_text(f):
    return "%7.0f %7.0f" % (f["p50_us"], f["p99_us"]) if "p50_us" in f else "%15s" % "-"


ROWS = (("sync", "set", "sync set"), ("sync", "get", "sync get"),
        ("sync", "total", "sync set+get"),
        ("batched", "set", "batched set x%d" % BATCH),
        ("batched", "get", "batched get x%d" % BATCH),
        ("batched", "total", "batched set+get"),
        ("clients", "total", "{clients} clients set+get"))


def report_pair(pair, clients):
    print("\n-- ours --fsync %s vs redis --appendfsync %s --"
          % (pair["fsync"], pair["appendfsync"]))
    print("%-22s %11s %11s %6s   %-15s   %-15s   %s" % (
        "workload", "ours ops/s", "redis ops/s", "ratio", "ours p50/p99 us", "redis p50/p99 us",
        "server CPU us/op ours/redis"))
    for workload, phase, label in ROWS:
        w = pair["workloads"].get(workload)
        if not w:
            continue
        a, b = w["ours"][phase], w["redis"][phase]
        cpu = ("%7.1f %7.1f" % (a["server_cpu_us_per_op"], b["server_cpu_us_per_op"])
               if "server_cpu_us_per_op" in a else "")
        print("%-22s %11.0f %11.0f %5.2fx   %s   %s   %s" % (
            label.format(clients=clients), a["ops_per_s"], b["ops_per_s"],
            ratio(a["ops_per_s"], b["ops_per_s"]), lat_text(a), lat_text(b), cpu))
    print("(batched p50/p99 are per batch of %d keys; the %d clients' p50/p99 are per op)"
          % (BATCH, clients))


def goals(pair, clients):
    out = []
    for workload, target, text in GOALS:
        w = pair["workloads"][workload]
        r = ratio(w["ours"]["total"]["ops_per_s"], w["redis"]["total"]["ops_per_s"])
        out.append({"goal": text.format(clients=clients), "ratio": r, "target": target,
                    "fsync": pair["fsync"], "pass": r >= target})
    return out


def report_echo(echo, pairs):
    reference = next((p for p in pairs if p["fsync"] == "interval"), pairs[0] if pairs else None)
    print("\n-- transport reference: pyzmq echo (dict behind a ROUTER), sync, one at a time --")
    print("%-22s %11s %15s" % ("", "ops/s", "p50/p99 us"))
    for phase in ("set", "get", "total"):
        print("%-22s %11.0f %s"
              % ("echo " + phase, echo[phase]["ops_per_s"], lat_text(echo[phase])))
    if reference:
        sync = reference["workloads"]["sync"]
        for phase in ("set", "get", "total"):
            e, r, o = (echo[phase]["ops_per_s"], sync["redis"][phase]["ops_per_s"],
                       sync["ours"][phase]["ops_per_s"])
            print("  %-5s echo/redis-py %.2fx   ours/echo %.2fx   (redis and ours: --fsync %s pair)"
                  % (phase, ratio(e, r), ratio(o, e), reference["fsync"]))


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--ops", type=int, default=20_000,
                   help="sync: N sets then N gets; batched: %dN keys; clients: %dN keys in all"
                        " (interval pair and echo)" % (BATCHED_FACTOR, CLIENTS_FACTOR))
    p.add_argument("--always-ops", type=int, default=0,
                   help="N for the always pair, which waits on fsync; 0 for --ops / 10")
    p.add_argument("--clients", type=int, default=8, help="concurrent client processes")
    p.add_argument("--repeat", type=int, default=2,
                   help="rounds of each workload, alternating ours and redis; the best counts")
    p.add_argument("--fsync", choices=("interval", "always", "both"), default="both",
                   help="which pairs to run: ours --fsync interval vs redis appendfsync "
                        "everysec, always vs always")
    p.add_argument("--no-echo", action="store_true", help="skip the pyzmq echo reference")
    p.add_argument("--max-seconds", type=float, default=120.0,
                   help="bound on one workload on one system")
    p.add_argument("--pin", choices=("split", "none"), default="split",
                   help="split: for sync and echo, servers on the last CPU and the client on "
                        "the others (needs 2 CPUs); none: the kernel places every process")
    p.add_argument("--json", metavar="FILE", help="also write every figure as JSON")
    args = p.parse_args(argv)
    if not args.always_ops:
        args.always_ops = max(args.clients, args.ops // 10)
    # (the bounds keep the workloads' key ranges apart)
    if not (0 < args.ops <= MAX_OPS and 0 < args.always_ops <= MAX_OPS):
        p.error("--ops and --always-ops must be 1 to %d" % MAX_OPS)
    if not 1 <= args.clients <= 64 or args.repeat < 1:
        p.error("--clients must be 1 to 64 and --repeat at least 1")
    return args


def _terminate(signum, frame):
    raise KeyboardInterrupt("signal %d" % signum)


def main(argv=None):
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _terminate)  # stop our servers on SIGTERM as on Ctrl-C
    choose_cpus(args.pin)
    try:
        ensure_installed()
        import redis
        import zmq
        print("redis-server: %s; redis-py %s (parser: %s); pyzmq %s; Python %s; %d CPUs"
              % (subprocess.run(["redis-server", "--version"], capture_output=True, text=True,
                                timeout=10).stdout.split()[2].lstrip("v="),
                 redis.__version__,
                 "hiredis" if getattr(redis.utils, "HIREDIS_AVAILABLE", False) else "python",
                 zmq.__version__, sys.version.split()[0], os.cpu_count() or 0))
        print("placement: %s" % ("sync and echo with the servers on CPU %s and the client on "
                                 "CPU %s; batched and clients on any CPU" % (
            ",".join(map(str, sorted(SERVER_CPUS))), ",".join(map(str, sorted(CLIENT_CPUS))))
            if SERVER_CPUS else "left to the kernel (--pin none, or one CPU)"))
        fsyncs = ("interval", "always") if args.fsync == "both" else (args.fsync,)
        started = time.monotonic()
        pairs = [run_pair(f, args.ops if f == "interval" else args.always_ops, args)
                 for f in fsyncs]
        echo = None if args.no_echo else run_echo(args.ops, args)
    except BenchError as exc:
        print("\nbench_node: %s" % exc, file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\nbench_node: interrupted; servers stopped", file=sys.stderr)
        return 130

    for pair in pairs:
        report_pair(pair, args.clients)
        if pair["node_exit_code"] not in (0, None):
            print("NOTE: the node exited with code %s on SIGTERM" % pair["node_exit_code"])
    if echo:
        report_echo(echo, pairs)
    all_goals = [g for pair in pairs for g in goals(pair, args.clients)]
    print("\nGoals (ours / redis, ops/s):")
    for g in all_goals:
        print("  %-4s %-45s %5.2fx (goal %.1fx, --fsync %s)" % (
            "PASS" if g["pass"] else "MISS", g["goal"], g["ratio"], g["target"], g["fsync"]))
    print("\n%.0f s in all" % (time.monotonic() - started))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"args": vars(args), "pairs": pairs, "echo": echo, "goals": all_goals},
                      f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
