"""`run_router.py`: the router, and with no --nodes the whole local cluster."""
from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
from typing import Callable, Optional, Sequence

import zmq

from yaddb.config import add_flag, load_environment, parse_command_line, protected_mode_allows
from yaddb.client import Client
from yaddb.errors import YaddbError
from yaddb.http_edge.app import make_app
from yaddb.http_edge.server import EdgeServer
from yaddb.limits import DEFAULT_MAX_VALUE_BYTES, DEFAULT_REPLICATION_TIMEOUT_S, FSYNC_POLICIES
from yaddb.placement import is_loopback, parse_address
from yaddb.router.cluster import EmbeddedCluster
from yaddb.router.configuration import Configuration
from yaddb.router.links import READ_PREFERENCES
from yaddb.router.server import RouterServer
from yaddb.router.subscribe import subscribe
from yaddb.supervisor import tune_gc_for_serving, watch_parent
from yaddb.transport.curve import Security
from yaddb.transport.keys import MEMBER, ClusterKeys, load_keys, make_keys

log = logging.getLogger("yaddb.router")

EMBEDDED_PARTITIONS = 2
EMBEDDED_SLAVES = 1
DEFAULT_FAILOVER_AFTER_S = 3.0
INPROC_FRONT = "inproc://yaddb-router"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="run_router.py", description="The YADDB router: places keys on partitions and "
        "serves HTTP and the native client. With no --nodes it starts a local cluster.")
    add_flag(parser, "-H", "--host", default="127.0.0.1", help="address the HTTP and zmq fronts bind")
    add_flag(parser, "-p", "--port", type=int, default=8080, help="HTTP edge port")
    add_flag(parser, "--zmq-port", type=int, default=5555, help="native client port (ZeroMQ ROUTER)")
    add_flag(parser, "--nodes", nargs="+", metavar="HOST:PORT",
             help="one master per partition, in partition order; none: start the embedded "
                  "cluster (--partitions masters, each with --slaves slaves, on free local ports)")
    add_flag(parser, "--data-dir", default="yaddb-data",
             help="the embedded cluster's node data (partition-N), or with --nodes the "
                  "router's configuration.json")
    add_flag(parser, "--node-timeout", type=float, default=1.0,
             help="seconds a master may take to answer before the client gets 503/Unavailable")
    add_flag(parser, "--max-value-bytes", type=int, default=DEFAULT_MAX_VALUE_BYTES,
             help="largest value accepted")
    add_flag(parser, "--read-preference", default="any", choices=READ_PREFERENCES,
             help="where reads through the router go: any (the master and its ready slaves in "
                  "turn; a slave may be a little behind) or master (slaves only when the "
                  "master is down)")
    add_flag(parser, "--replication-timeout", type=float, default=DEFAULT_REPLICATION_TIMEOUT_S,
             help="how long masters hold a write with w above 1 for their slaves (the embedded "
                  "cluster's nodes get it; give nodes of --nodes the same)")
    add_flag(parser, "--partitions", type=int, default=EMBEDDED_PARTITIONS,
             help="partitions of the embedded cluster (no --nodes); a data dir keeps the count "
                  "it was first started with")
    add_flag(parser, "--slaves", type=int, default=EMBEDDED_SLAVES,
             help="slaves per master in the embedded cluster (no --nodes)")
    add_flag(parser, "--fsync", default="always", choices=FSYNC_POLICIES,
             help="the embedded cluster's masters' --fsync: always (before each reply; safe on "
                  "power loss), interval (every second), never (left to the OS)")
    add_flag(parser, "--slave-fsync", default="interval", choices=FSYNC_POLICIES,
             help="the embedded cluster's slaves' --fsync. They share the masters' machine and "
                  "disk, where a power loss stops both and every acknowledged write is already "
                  "fsynced by its master; and they are never promoted (no failover without "
                  "--nodes). So a second fsync per write buys nothing there")
    add_flag(parser, "--parent-fd", type=int, help="stop when this inherited file descriptor "
             "reaches end of file (set by a supervising process, so its death stops the router)")
    add_flag(parser, "--failover-after", type=float, default=DEFAULT_FAILOVER_AFTER_S,
             help="seconds a master may be silent before the router promotes one of its "
                  "slaves (0: never); with --nodes the router keeps the configuration (who is "
                  "master, at which epoch) in --data-dir. The embedded cluster restarts a "
                  "failed node itself, on this machine, and does not fail over")
    add_flag(parser, "--http-token", help="every HTTP endpoint but /ping then needs the header "
             "'Authorization: Bearer TOKEN'; required when -H is not loopback (protected mode)")
    add_flag(parser, "--keys-dir", help="the cluster's CURVE keys (python3 -m yaddb keygen DIR), "
             "to reach nodes started with the same keys; the native front then takes CURVE "
             "clients when -H is not loopback (required there: protected mode). The embedded "
             "cluster makes its own in DATA_DIR/keys on first start")
    add_flag(parser, "--insecure", action="store_true",
             help="serve beyond loopback without protection (no --http-token, no --keys-dir): "
                  "anyone who reaches the ports may read and change every key. Refused otherwise")
    add_flag(parser, "--log-level", default="INFO", help="DEBUG, INFO, WARNING or ERROR")
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    load_environment()  # before the parser: its defaults come from the environment
    args = parse_command_line(build_parser(), argv)
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    if args.parent_fd is not None:
        watch_parent(args.parent_fd, stop.set)
    allowed = [protected_mode_allows(args.host, args.keys_dir is not None or not args.nodes,
                                     args.insecure, f"native clients on port {args.zmq_port}",
                                     "--keys-dir DIR (YADDB_KEYS_DIR)"),
               protected_mode_allows(args.host, bool(args.http_token), args.insecure,
                                     f"HTTP on port {args.port}",
                                     "--http-token TOKEN (YADDB_HTTP_TOKEN)")]
    if not all(allowed):  # every missing protection named at once
        return 2
    try:
        masters = [f"{host}:{port}" for host, port in map(parse_address, args.nodes or [])]
    except YaddbError as exc:
        log.error("--nodes: %s", exc)
        return 2
    cluster = None
    try:
        if not masters:
            args.keys_dir = args.keys_dir or embedded_keys(args.data_dir)
            # Children first, then this process's ZeroMQ context (never fork one).
            cluster = EmbeddedCluster(args.data_dir, args.partitions, args.slaves,
                                      ["--max-value-bytes", str(args.max_value_bytes),
                                       "--fsync", args.fsync,
                                       "--replication-timeout", str(args.replication_timeout)],
                                      args.keys_dir, slave_args=["--fsync", args.slave_fsync])
            cluster.start()
            masters = cluster.masters
        keys = None if args.keys_dir is None else load_keys(args.keys_dir)
        return _serve(args, masters, keys, stop, cluster.terminate if cluster else lambda: None)
    except YaddbError as exc:
        log.error("%s", exc)
        return 1
    finally:
        if cluster is not None:
            cluster.stop()


def embedded_keys(data_dir: str) -> str:
    """The one-command cluster's keys, DATA_DIR/keys, made on its first start."""
    directory = os.path.join(data_dir, "keys")
    if not os.path.exists(os.path.join(directory, MEMBER + ".key")):
        make_keys(directory)
        log.info("made the cluster's CURVE keys in %s: its nodes take no one else", directory)
    return directory


def _serve(args: argparse.Namespace, masters: list[str], keys: Optional[ClusterKeys],
           stop: threading.Event, stop_nodes: Callable[[], None]) -> int:
    """Serve until `stop` is set; `stop_nodes` then asks the nodes to stop while this
    process closes its own sockets, so both take their time at once."""
    context = zmq.Context()
    security = None if keys is None else Security(context, keys, "router")
    failover_after = args.failover_after if args.nodes else 0.0
    configuration = Configuration(masters, args.data_dir if failover_after > 0 else None)
    router = RouterServer(masters, [f"tcp://{args.host}:{args.zmq_port}", INPROC_FRONT], context,
                          args.node_timeout, args.max_value_bytes, args.read_preference,
                          args.replication_timeout, configuration, failover_after, security,
                          curve_front=security is not None and not is_loopback(args.host),
                          local_keys_dir=os.path.abspath(keys.directory)
                          if keys is not None and is_loopback(args.host) else None)
    thread = threading.Thread(target=router.serve, name="yaddb-router", daemon=True)
    thread.start()
    edge = None
    try:
        if not router.ready.wait(30):
            log.error("the router loop did not start")
            return 1
        if router.start_error:
            log.error("%s", router.start_error)
            return 1
        # Each HTTP worker thread gets its own Client (ZeroMQ sockets are not thread-safe),
        # talking to the router loop over inproc: one routing core behind both fronts.
        # One-key calls go straight to the key's master (direct=True: /query 3,550/s instead
        # of 2,600 through the router loop, bench in README); anything else, and any failure,
        # goes through the router loop, which answers every request (503 at worst after the
        # node timeout) and over inproc loses nothing: one try with room to spare.
        client_timeout = args.node_timeout + 1.0
        app = make_app(lambda: Client(INPROC_FRONT, timeout=client_timeout, context=context,
                                      max_value_bytes=args.max_value_bytes, read_retries=0,
                                      direct=True, keys=security and security.as_member),
                       router.status, args.max_value_bytes, http_token=args.http_token,
                       subscriber=lambda ip, port, master: subscribe(
                           router, context, ip, port, master, client_timeout,
                           security and security.as_member.secure_client))
        try:
            edge = EdgeServer(app, host=args.host, port=args.port).start()
        except OSError as exc:
            log.error("cannot serve HTTP on %s:%d: %s", args.host, args.port, exc)
            return 1
        log.info("partitions: %s", ", ".join(f"{i}: {m}" for i, m in enumerate(masters)))
        log.info("HTTP edge: http://%s:%s", args.host, edge.port)
        log.info("native clients: tcp://%s:%d", args.host, args.zmq_port)
        tune_gc_for_serving()
        stop.wait()
        log.info("stopping")
        return 0
    finally:
        stop_nodes()
        if edge is not None:
            edge.stop()
        router.stop()
        thread.join(30)
        if security is not None:
            security.close()
        context.term()


if __name__ == "__main__":
    sys.exit(main())
