"""`run_router.py`: the router, and with no --nodes the whole local cluster."""
from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from typing import Callable, Optional, Sequence

import zmq

from yaddb.config import add_flag, load_environment, parse_command_line
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
from yaddb.supervisor import watch_parent

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
             help="the embedded cluster's nodes' --fsync: always (before each reply; safe on "
                  "power loss), interval (every second), never (left to the OS)")
    add_flag(parser, "--parent-fd", type=int, help="stop when this inherited file descriptor "
             "reaches end of file (set by a supervising process, so its death stops the router)")
    add_flag(parser, "--failover-after", type=float, default=DEFAULT_FAILOVER_AFTER_S,
             help="seconds a master may be silent before the router promotes one of its "
                  "slaves (0: never); with --nodes the router keeps the configuration (who is "
                  "master, at which epoch) in --data-dir. The embedded cluster restarts a "
                  "failed node itself, on this machine, and does not fail over")
    add_flag(parser, "--http-token", help="every HTTP endpoint but /ping then needs the header "
             "'Authorization: Bearer TOKEN'; required when -H is not loopback (protected mode)")
    add_flag(parser, "--insecure", action="store_true",
             help="serve beyond loopback without protection (no --http-token): anyone who "
                  "reaches the port may read and change every key. Refused otherwise")
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
    if not protected_mode_allows(args):
        return 2
    try:
        masters = [f"{host}:{port}" for host, port in map(parse_address, args.nodes or [])]
    except YaddbError as exc:
        log.error("--nodes: %s", exc)
        return 2
    cluster = None
    try:
        if not masters:
            # Children first, then this process's ZeroMQ context (never fork one).
            cluster = EmbeddedCluster(args.data_dir, args.partitions, args.slaves,
                                      ["--max-value-bytes", str(args.max_value_bytes),
                                       "--fsync", args.fsync,
                                       "--replication-timeout", str(args.replication_timeout)])
            cluster.start()
            masters = cluster.masters
        return _serve(args, masters, stop, cluster.terminate if cluster else lambda: None)
    except YaddbError as exc:
        log.error("%s", exc)
        return 1
    finally:
        if cluster is not None:
            cluster.stop()


def protected_mode_allows(args: argparse.Namespace) -> bool:
    """Redis's protected mode: an edge beyond loopback needs a token, or --insecure (which
    is said loudly at every start)."""
    if is_loopback(args.host) or args.http_token:
        return True
    if args.insecure:
        log.warning("INSECURE: the HTTP edge on %s serves without a token (--insecure): anyone "
                    "who reaches port %d can read and change every key", args.host, args.port)
        return True
    log.error("refusing to serve HTTP on %s without a token (protected mode): give "
              "--http-token TOKEN (or YADDB_HTTP_TOKEN), listen on 127.0.0.1, or pass "
              "--insecure to serve anyone who reaches the port", args.host)
    return False


def _serve(args: argparse.Namespace, masters: list[str], stop: threading.Event,
           stop_nodes: Callable[[], None]) -> int:
    """Serve until `stop` is set; `stop_nodes` then asks the nodes to stop while this
    process closes its own sockets, so both take their time at once."""
    context = zmq.Context()
    failover_after = args.failover_after if args.nodes else 0.0
    configuration = Configuration(masters, args.data_dir if failover_after > 0 else None)
    router = RouterServer(masters, [f"tcp://{args.host}:{args.zmq_port}", INPROC_FRONT], context,
                          args.node_timeout, args.max_value_bytes, args.read_preference,
                          args.replication_timeout, configuration, failover_after)
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
                                      direct=True),
                       router.status, args.max_value_bytes, http_token=args.http_token,
                       subscriber=lambda ip, port, master: subscribe(
                           router, context, ip, port, master, client_timeout))
        try:
            edge = EdgeServer(app, host=args.host, port=args.port).start()
        except OSError as exc:
            log.error("cannot serve HTTP on %s:%d: %s", args.host, args.port, exc)
            return 1
        log.info("partitions: %s", ", ".join(f"{i}: {m}" for i, m in enumerate(masters)))
        log.info("HTTP edge: http://%s:%s", args.host, edge.port)
        log.info("native clients: tcp://%s:%d", args.host, args.zmq_port)
        stop.wait()
        log.info("stopping")
        return 0
    finally:
        stop_nodes()
        if edge is not None:
            edge.stop()
        router.stop()
        thread.join(30)
        context.term()


if __name__ == "__main__":
    sys.exit(main())
