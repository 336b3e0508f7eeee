#!/usr/bin/env python3
"""Benchmark the HTTP edge with wrk: a node (run_node.py) and the edge
(`python3 -m yaddb.http_edge.server`), each on a free port of 127.0.0.1, in its own process;
or, with --cluster, the one-command cluster (`run_router.py`, which starts 2 nodes itself).

    python3 bench/bench_http.py                        # 10 s each on /ping, /query, /set
    python3 bench/bench_http.py --duration 3           # quick
    python3 bench/bench_http.py --servers cheroot,waitress --rounds 3   # compare WSGI servers
    python3 bench/bench_http.py --cluster --duration 5 # run_router.py as a user runs it

Workloads, each `--connections` (16) keep-alive connections from `--wrk-threads` (2) wrk
threads for `--duration` seconds:

    /ping    GET /ping
    /query   POST /query, the hex of one stored key as text/plain (a Lua script sets method,
             body and Content-Type)
    /set     PUT /set, JSON of a 100-byte text value, a new value (so a new key) per request

Per line: requests/s, latency p50/p99 from wrk, non-2xx replies and socket errors (any makes
the run fail), and CPU time per request of the edge and the node (from /proc). The ratio
/query / /ping is the edge's cost of reaching the database; the goal is >= 0.7x. The node
runs with `--fsync interval` by default, so /set measures the edge rather than the disk.

--cluster measures `run_router.py` with no --nodes instead: its nodes keep their default
`--fsync` (always), everything is unpinned unless --pin split is given, and CPU per request is
given for the router process, its node children and their sum; /set / /ping is printed too.

With several --servers, each round runs every server in turn (fresh edge process, same node)
and the best round of each counts; edge CPU per request is the steadier figure on a busy
machine. wrk comes from Debian (`apt-get install -y wrk`, done here when it is missing).
This is a benchmark, not a test: it exits non-zero only when something failed.
"""
import argparse
import http.client
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO_ROOT not in sys.path:
    sys.path.insert(0, REPO_ROOT)

START_TIMEOUT = 20.0
CLUSTER_START_TIMEOUT = 60.0
STOP_TIMEOUT = 15.0
INSTALL_TIMEOUT = 600
GOAL_RATIO = 0.7
VALUE_SIZE = 100

QUERY_LUA = """
wrk.method = "POST"
wrk.body = "{key}"
wrk.headers["Content-Type"] = "text/plain"
"""
# A new value per request: key_for(value) then names a new key every time.
SET_LUA = """
local next_id = 0
function setup(thread)
  next_id = next_id + 1
  thread:set("tid", next_id)
end
local counter = 0
local pad = string.rep("v", {pad})
function request()
  counter = counter + 1
  local value = string.format("%s-%d-%010d", pad, tid or 0, counter)
  local body = '{{"content_type":"text/plain","encoding":"utf-8","value":"' .. value .. '"}}'
  return wrk.format("PUT", "/set", {{["Content-Type"] = "application/json"}}, body)
end
"""


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def child_env():
    env = {k: v for k, v in os.environ.items() if not k.startswith("YADDB_")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [REPO_ROOT, env.get("PYTHONPATH")]))
    return env


def ensure_wrk():
    if shutil.which("wrk"):
        return shutil.which("wrk")
    print("wrk is missing: apt-get install -y wrk", flush=True)
    for command in (["apt-get", "install", "-y", "wrk"], ["apt-get", "update"],
                    ["apt-get", "install", "-y", "wrk"]):
        try:
            subprocess.run(command, check=False, timeout=INSTALL_TIMEOUT,
                           stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        except (OSError, subprocess.TimeoutExpired) as exc:
            print(f"  {' '.join(command)} failed: {exc}")
        if shutil.which("wrk"):
            return shutil.which("wrk")
    sys.exit("cannot install wrk (Debian package `wrk`); install it and run again")


def pinned(command, cpus):
    """`command` run on the given CPUs (taskset), or as it is when cpus is None."""
    return command if cpus is None else ["taskset", "-c", ",".join(map(str, cpus)), *command]


def choose_cpus(mode):
    """{"edge": cpus, "others": cpus} (None: leave it to the kernel).

    split: the edge alone on the last CPU, the node and wrk on the others, as the router
    would be apart from its nodes and clients in a deployment; this also keeps the figures
    steady (who shares a CPU with whom is otherwise the kernel's draw, and a loopback round
    trip costs several times more when the other CPU must be woken)."""
    cpus = sorted(os.sched_getaffinity(0))
    if mode == "none" or len(cpus) < 2 or not shutil.which("taskset"):
        if mode == "split":
            print("  (--pin split needs 2 CPUs and taskset; running unpinned)", flush=True)
        return {"edge": None, "others": None}
    return {"edge": cpus[-1:], "others": cpus[:-1]}


def cpu_seconds(pid):
    """User + system CPU time of a process (all its threads), from /proc."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return float("nan")


def children(pid):
    """The pids whose parent is `pid`, from /proc/*/stat."""
    found = []
    for entry in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{entry}/stat") as stat:
                if int(stat.read().rsplit(")", 1)[1].split()[1]) == pid:
                    found.append(int(entry))
        except (OSError, IndexError, ValueError):
            pass
    return found


class Process:
    """A child in its own process group, stopped with SIGTERM, then SIGKILL."""

    def __init__(self, command, log_path):
        self.log_path = log_path
        with open(log_path, "ab") as log:
            self.proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT,
                                         env=child_env(), cwd=os.path.dirname(log_path),
                                         start_new_session=True)

    def cpu_seconds(self):
        return cpu_seconds(self.proc.pid)

    def check_alive(self, what):
        if self.proc.poll() is not None:
            with open(self.log_path, errors="replace") as log:
                tail = log.read()[-3000:]
            raise RuntimeError(f"{what} exited with {self.proc.returncode}:\n{tail}")

    def stop(self):
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
                return self.proc.wait(timeout=STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                print(f"  process {self.proc.pid} ignored SIGTERM; killing it", flush=True)
            except ProcessLookupError:
                pass
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        return self.proc.wait(timeout=STOP_TIMEOUT)


class Children:
    """The child processes of a Process (the router's nodes): CPU time summed over them."""

    def __init__(self, parent):
        self.parent = parent

    def cpu_seconds(self):
        return sum(cpu_seconds(pid) for pid in children(self.parent.proc.pid))


def start_node(workdir, fsync, cpus):
    port = free_port()
    node = Process(pinned([sys.executable, os.path.join(REPO_ROOT, "run_node.py"), "-p", str(port),
                           "--data-dir", os.path.join(workdir, "node"), "--fsync", fsync,
                           "--log-level", "WARNING", "master"], cpus),
                   os.path.join(workdir, "node.log"))
    from yaddb import Client
    endpoint = f"tcp://127.0.0.1:{port}"
    deadline = time.monotonic() + START_TIMEOUT
    with Client(endpoint, timeout=1.0) as client:
        while True:
            node.check_alive("the node")
            try:
                if client.ping():
                    return node, endpoint
            except Exception:
                pass
            if time.monotonic() > deadline:
                node.stop()
                raise RuntimeError("the node did not answer in time")
            time.sleep(0.05)


def start_edge(workdir, endpoint, server, threads, cpus):
    port = free_port()
    edge = Process(pinned([sys.executable, "-m", "yaddb.http_edge.server", "--backend", endpoint,
                           "-p", str(port), "--threads", str(threads), "--server", server,
                           "--log-level", "WARNING"], cpus),
                   os.path.join(workdir, f"edge-{server}.log"))
    return wait_http(edge, port, f"the edge ({server})", START_TIMEOUT), port


def wait_http(proc, port, what, timeout, stop=None):
    """`proc` once GET /ping on `port` answers PONG; stopped (`stop`, default proc.stop) and
    an error after `timeout` s."""
    deadline = time.monotonic() + timeout
    while True:
        proc.check_alive(what)
        try:
            status, body = http_call(port, "GET", "/ping")
            if status == 200 and body == b"PONG":
                return proc
        except OSError:
            pass
        if time.monotonic() > deadline:
            (stop or proc.stop)()
            raise RuntimeError(f"{what} did not answer in time")
        time.sleep(0.05)


def start_cluster(workdir, cpus):
    """run_router.py with no --nodes (it starts 2 nodes): (router Process, HTTP port)."""
    port = free_port()
    router = Process(pinned([sys.executable, os.path.join(REPO_ROOT, "run_router.py"), "-p",
                             str(port), "--zmq-port", str(free_port()), "--data-dir",
                             os.path.join(workdir, "cluster"), "--log-level", "WARNING"], cpus),
                     os.path.join(workdir, "router.log"))
    return wait_http(router, port, "the cluster (run_router.py)", CLUSTER_START_TIMEOUT,
                     lambda: stop_cluster(router)), port


def stop_cluster(router):
    """SIGTERM to the router's group (it stops its nodes); then SIGKILL any node left over."""
    nodes = children(router.proc.pid)
    code = router.stop()
    if code not in (0, -signal.SIGTERM):
        print(f"  the router exited with {code} on SIGTERM", flush=True)
    for pid in nodes:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            continue
        print(f"  node {pid} was still running after the router stopped; killing it", flush=True)
        try:
            os.killpg(pid, signal.SIGKILL)  # each node leads its own process group
        except ProcessLookupError:
            pass


def http_call(port, method, path, body=None, content_type=None):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        headers = {"Content-Type": content_type} if content_type else {}
        conn.request(method, path, body=body, headers=headers)
        reply = conn.getresponse()
        return reply.status, reply.read()
    finally:
        conn.close()


def parse_wrk(output):
    def seconds(text):
        value, unit = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text).groups()
        return float(value) * {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0}[unit]
    result = {"rps": float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1)),
              "requests": int(re.search(r"(\d+) requests in", output).group(1)),
              "non2xx": 0, "socket_errors": 0}
    for quantile in ("50", "99"):
        match = re.search(rf"^\s+{quantile}(?:\.000)?%\s+(\S+)", output, re.M)
        result[f"p{quantile}_ms"] = seconds(match.group(1)) * 1e3 if match else float("nan")
    match = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    if match:
        result["non2xx"] = int(match.group(1))
    match = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output)
    if match:
        result["socket_errors"] = sum(int(n) for n in match.groups())
    return result


def run_wrk(wrk, port, path, script, args, edge, node):
    command = pinned([wrk, f"-t{args.wrk_threads}", f"-c{args.connections}",
                      f"-d{args.duration}s", "--latency", "--timeout", "5s"], args.cpus["others"])
    if script:
        command += ["-s", script]
    command.append(f"http://127.0.0.1:{port}{path}")
    edge_cpu, node_cpu = edge.cpu_seconds(), node.cpu_seconds()
    done = subprocess.run(command, capture_output=True, text=True,
                          timeout=args.duration + 60, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"wrk failed ({done.returncode}): {done.stderr or done.stdout}")
    result = parse_wrk(done.stdout)
    requests = max(1, result["requests"])
    result["edge_us"] = (edge.cpu_seconds() - edge_cpu) / requests * 1e6
    result["node_us"] = (node.cpu_seconds() - node_cpu) / requests * 1e6
    return result


def measure(wrk, args, workdir, node, endpoint, server, scripts):
    edge, port = start_edge(workdir, endpoint, server, args.threads, args.cpus["edge"])
    try:
        return workloads(wrk, args, port, edge, node, scripts, f"the edge ({server})")
    finally:
        code = edge.stop()
        if code not in (0, -signal.SIGTERM):
            print(f"  the edge ({server}) exited with {code} on SIGTERM", flush=True)


def workloads(wrk, args, port, edge, node, scripts, what):
    """A 1 s warm-up on /ping (connections, threads and their Clients), then each workload."""
    run_wrk(wrk, port, "/ping", None, argparse.Namespace(**{**vars(args), "duration": 1}),
            edge, node)
    results = {}
    for name, path, script in (("/ping", "/ping", None), ("/query", "/query", scripts["query"]),
                               ("/set", "/set", scripts["set"])):
        results[name] = run_wrk(wrk, port, path, script, args, edge, node)
        edge.check_alive(what)
    return results


def write_scripts(workdir, key):
    scripts = {}
    for name, text in (("query", QUERY_LUA.format(key=key.hex())),
                       ("set", SET_LUA.format(pad=VALUE_SIZE - 13))):
        scripts[name] = os.path.join(workdir, f"{name}.lua")
        with open(scripts[name], "w") as script:
            script.write(text)
    return scripts


def run_cluster(wrk, args):
    """--cluster: the workloads against run_router.py and its own 2 nodes."""
    print(f"cluster benchmark (run_router.py, 2 nodes): {args.connections} connections, "
          f"{args.wrk_threads} wrk threads, {args.duration} s per workload, {os.cpu_count()} "
          f"CPUs (pin: {args.pin} {args.cpus}), {args.rounds} round(s)", flush=True)
    best, failed = {}, False
    with ExitStack() as stack:
        workdir = stack.enter_context(tempfile.TemporaryDirectory(prefix="yaddb-bench-http-"))
        router, port = start_cluster(workdir, args.cpus["edge"])
        stack.callback(stop_cluster, router)
        status, body = http_call(port, "PUT", "/set", json.dumps(
            {"content_type": "text/plain", "encoding": "utf-8", "value": "q" * VALUE_SIZE}),
            "application/json")
        if status != 200:
            raise RuntimeError(f"PUT /set answered {status}: {body[:300]!r}")
        scripts = write_scripts(workdir, bytes.fromhex(next(iter(json.loads(body)))))
        for round_no in range(1, args.rounds + 1):
            print(f"round {round_no}", flush=True)
            results = workloads(wrk, args, port, router, Children(router), scripts,
                                "the cluster (run_router.py)")
            show("cluster", results, ("router", "nodes"))
            for name, r in results.items():
                failed |= bool(r["non2xx"] or r["socket_errors"])
                if name not in best or r["rps"] > best[name]["rps"]:
                    best[name] = r
    ratios = {name: best[name]["rps"] / best["/ping"]["rps"] for name in ("/query", "/set")}
    print(f"best of rounds (req/s): /ping {best['/ping']['rps']:.0f}  /query "
          f"{best['/query']['rps']:.0f}  /set {best['/set']['rps']:.0f}", flush=True)
    print(f"/query / /ping = {ratios['/query']:.2f}x (goal >= {GOAL_RATIO}x: "
          f"{'PASS' if ratios['/query'] >= GOAL_RATIO else 'MISS'})   "
          f"/set / /ping = {ratios['/set']:.2f}x", flush=True)
    return finish(args, best, failed)


def show(server, results, labels=("edge", "node")):
    for name, r in results.items():
        flag = "" if not (r["non2xx"] or r["socket_errors"]) else \
            f"  !! {r['non2xx']} non-2xx, {r['socket_errors']} socket errors"
        total = f"  all {r['edge_us'] + r['node_us']:5.0f} us/req" if labels[1] == "nodes" else ""
        print(f"  {server:9s} {name:7s} {r['rps']:9.0f} req/s  p50 {r['p50_ms']:6.2f} ms  "
              f"p99 {r['p99_ms']:6.2f} ms  {labels[0]} {r['edge_us']:5.0f} us/req  "
              f"{labels[1]} {r['node_us']:4.0f} us/req{total}{flag}", flush=True)



def finish(args, best, failed) -> int:
    """Write --json if asked; the exit status: 1 if any request failed."""
    if args.json:
        with open(args.json, "w") as out:
            json.dump({"args": vars(args), "best": best}, out, indent=1)
    if failed:
        print("some requests failed (non-2xx or socket errors): see the lines marked !!")
    return int(bool(failed))

def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=int, default=10, help="seconds per workload")
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--wrk-threads", type=int, default=2)
    parser.add_argument("--threads", type=int, default=None,
                        help="edge WSGI threads (default: the server module's)")
    parser.add_argument("--servers", default=None,
                        help="comma-separated WSGI servers to run (default: the edge's default)")
    parser.add_argument("--rounds", type=int, default=1, help="rounds per server; best counts")
    parser.add_argument("--fsync", default="interval", help="the node's --fsync")
    parser.add_argument("--pin", choices=("split", "none"), default=None,
                        help="split (default without --cluster): the edge (with --cluster the "
                             "router and its nodes) alone on the last CPU, wrk and any node on "
                             "the others; none (default with --cluster): all on every CPU")
    parser.add_argument("--cluster", action="store_true",
                        help="run_router.py with its own 2 nodes instead of a node and the edge")
    parser.add_argument("--json", help="also write every figure to this file")
    args = parser.parse_args(argv)
    args.pin = args.pin or ("none" if args.cluster else "split")
    args.cpus = choose_cpus(args.pin)
    if args.cluster:
        return run_cluster(ensure_wrk(), args)

    from yaddb import Client
    from yaddb.http_edge import server as edge_server
    args.threads = args.threads or edge_server.DEFAULT_THREADS
    servers = (args.servers or edge_server.DEFAULT_BACKEND).split(",")
    for server in servers:
        if server not in edge_server.BACKENDS:
            sys.exit(f"unknown server {server!r}; known: {sorted(edge_server.BACKENDS)}")
        module = {"cheroot": "cheroot", "waitress": "waitress"}[server]
        if subprocess.run([sys.executable, "-c", f"import {module}"], env=child_env(),
                          capture_output=True).returncode != 0:
            sys.exit(f"{server} is not installed: pip install {module} (only "
                     f"{edge_server.DEFAULT_BACKEND} is in requirements.txt)")
    wrk = ensure_wrk()
    print(f"HTTP edge benchmark: {args.connections} connections, {args.wrk_threads} wrk "
          f"threads, {args.duration} s per workload, edge threads {args.threads}, node "
          f"--fsync {args.fsync}, {os.cpu_count()} CPUs (pin: {args.pin} {args.cpus}); servers "
          f"{', '.join(servers)}, {args.rounds} round(s)", flush=True)
    print(f"edge default: {edge_server.DEFAULT_BACKEND}. {edge_server.CHOICE_SUMMARY}", flush=True)

    best = {server: {} for server in servers}
    failed = False
    with ExitStack() as stack:
        workdir = stack.enter_context(tempfile.TemporaryDirectory(prefix="yaddb-bench-http-"))
        node, endpoint = start_node(workdir, args.fsync, args.cpus["others"])
        stack.callback(node.stop)
        with Client(endpoint, timeout=2.0) as client:
            key = client.set(None, "q" * VALUE_SIZE, content_type="text/plain", encoding="utf-8")
        scripts = write_scripts(workdir, key)
        for round_no in range(1, args.rounds + 1):
            print(f"round {round_no}", flush=True)
            for server in servers:
                results = measure(wrk, args, workdir, node, endpoint, server, scripts)
                show(server, results)
                for name, r in results.items():
                    failed |= bool(r["non2xx"] or r["socket_errors"])
                    if name not in best[server] or r["rps"] > best[server][name]["rps"]:
                        best[server][name] = r
                    best[server][name]["edge_us_min"] = min(
                        r["edge_us"], best[server][name].get("edge_us_min", float("inf")))
            node.check_alive("the node")

    print("best of rounds (req/s; edge CPU us/req, lowest of rounds):")
    for server in servers:
        b = best[server]
        ratio = b["/query"]["rps"] / b["/ping"]["rps"]
        verdict = "PASS" if ratio >= GOAL_RATIO else "MISS"
        print(f"  {server:9s} /ping {b['/ping']['rps']:7.0f} ({b['/ping']['edge_us_min']:.0f} us)  "
              f"/query {b['/query']['rps']:7.0f} ({b['/query']['edge_us_min']:.0f} us)  "
              f"/set {b['/set']['rps']:7.0f} ({b['/set']['edge_us_min']:.0f} us)  "
              f"/query / /ping = {ratio:.2f}x (goal >= {GOAL_RATIO}x: {verdict})", flush=True)
    return finish(args, best, failed)


if __name__ == "__main__":
    sys.exit(main())
