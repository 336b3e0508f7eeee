"""`run_node.py`: one storage node, configured from flags, YADDB_* variables and .env."""
from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
from typing import Optional, Sequence

import zmq

from yaddb.config import add_flag, load_environment, parse_command_line, protected_mode_allows
from yaddb.errors import YaddbError
from yaddb.limits import (BLOB_OVERHEAD, DEFAULT_MAX_VALUE_BYTES, DEFAULT_REPLICATION_TIMEOUT_S,
                          FSYNC_POLICIES)
from yaddb.lsm import Engine
from yaddb.lsm.engine import DEFAULT_MEMTABLE_BYTES
from yaddb.node.handler import NodeHandler
from yaddb.node.roles import RoleSwitch, managed_role, master_lineage
from yaddb.node.server import NodeServer
from yaddb.replication.backlog import DEFAULT_BACKLOG_BYTES
from yaddb.replication.lease import Lease
from yaddb.replication.master import ReplicationSource
from yaddb.replication.slave import Replica
from yaddb.supervisor import tune_gc_for_serving, watch_parent
from yaddb.transport.curve import Security
from yaddb.transport.keys import load_keys

log = logging.getLogger("yaddb.node")

DEFAULT_PORT = 7000


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="run_node.py", description="A YADDB storage node: a partition master, or a slave "
        "that replicates one master. Requests arrive on a ZeroMQ ROUTER at HOST:PORT.")
    add_flag(parser, "-H", "--host", default="127.0.0.1", help="address to bind")
    add_flag(parser, "-p", "--port", type=int, default=DEFAULT_PORT, help="request port (ZeroMQ ROUTER)")
    add_flag(parser, "--data-dir", help="data directory; default ./yaddb-data/node-PORT")
    add_flag(parser, "--log-level", default="INFO", help="DEBUG, INFO, WARNING or ERROR")
    add_flag(parser, "--fsync", default="always", choices=FSYNC_POLICIES,
             help="when the write-ahead log is fsynced: always (before each reply; safe on power "
                  "loss), interval (every --fsync-interval-ms), never (left to the OS)")
    add_flag(parser, "--fsync-interval-ms", type=int, default=1000, help="for --fsync interval")
    add_flag(parser, "--max-value-bytes", type=int, default=DEFAULT_MAX_VALUE_BYTES,
             help="largest value accepted")
    add_flag(parser, "--memtable-bytes", type=int, default=DEFAULT_MEMTABLE_BYTES,
             help="memtable size that triggers a flush to a segment")
    add_flag(parser, "--pub-port", type=int,
             help="a master's write-log port (ZeroMQ PUB) its slaves subscribe to; default PORT+1")
    add_flag(parser, "--backlog-bytes", type=int, default=DEFAULT_BACKLOG_BYTES,
             help="how much of its latest writes a master keeps for slaves that fell behind "
                  "(beyond it they take a full snapshot)")
    add_flag(parser, "--advertise-host", help="the address other processes reach this node at "
             "(a slave tells its master); default HOST, or 127.0.0.1 when HOST is 0.0.0.0")
    add_flag(parser, "--replication-timeout", type=float, default=DEFAULT_REPLICATION_TIMEOUT_S,
             help="how long a master holds a write with w above 1 for its slaves' "
                  "confirmations before answering ReplicationTimeout (the write stays applied)")
    add_flag(parser, "--min-slaves-to-write", type=int, default=0,
             help="a master refuses writes while fewer slaves than this confirmed within "
                  "--min-slaves-max-lag seconds (0: never refuse)")
    add_flag(parser, "--min-slaves-max-lag", type=float, default=10.0,
             help="see --min-slaves-to-write")
    add_flag(parser, "--keys-dir", help="the cluster's CURVE keys (python3 -m yaddb keygen DIR): "
             "both ports then admit only peers with the member key or a client key, and "
             "replication and control only to members; required when HOST is not loopback "
             "(protected mode)")
    add_flag(parser, "--insecure", action="store_true",
             help="listen beyond loopback without --keys-dir: anyone who reaches the ports may "
                  "read and change every key, or wipe the node. Refused otherwise")
    add_flag(parser, "--parent-fd", type=int, help="stop when this inherited file descriptor "
             "reaches end of file (set by a supervising process, so its death stops the node)")
    roles = parser.add_subparsers(dest="role", required=True, metavar="{master,slave}")
    roles.add_parser("master", help="serve reads and writes for a partition")
    slave = roles.add_parser("slave", help="replicate a master and serve reads; with no "
                             "--master-host/--master-port it waits for POST /subscribe")
    add_flag(slave, "--master-host", help="the master to replicate")
    add_flag(slave, "--master-port", type=int, help="the master's request port")
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    load_environment()  # before the parser: its defaults come from the environment
    args = parse_command_line(build_parser(), argv)
    if args.role == "slave" and (args.master_host is None) != (args.master_port is None):
        log.error("a slave needs both --master-host and --master-port, or neither (then it "
                  "waits for POST /subscribe on the router)")
        return 2
    if not protected_mode_allows(args.host, args.keys_dir is not None, args.insecure,
                                 f"a node's ports {args.port} and {args.pub_port or args.port + 1}",
                                 "--keys-dir DIR (YADDB_KEYS_DIR)"):
        return 2
    keys = None
    if args.keys_dir is not None:
        try:
            keys = load_keys(args.keys_dir)
        except YaddbError as exc:
            log.error("--keys-dir: %s", exc)
            return 2
    data_dir = args.data_dir or os.path.join("yaddb-data", f"node-{args.port}")
    try:
        engine = Engine(data_dir, fsync=args.fsync, fsync_interval_ms=args.fsync_interval_ms,
                        memtable_bytes=args.memtable_bytes,
                        max_value_bytes=args.max_value_bytes + BLOB_OVERHEAD)
    except YaddbError as exc:
        log.error("cannot open %s: %s", data_dir, exc)
        return 1
    try:
        lease = Lease(data_dir)
    except YaddbError as exc:
        engine.close()
        log.error("cannot open %s: %s", data_dir, exc)
        return 1
    context = zmq.Context()
    security = None if keys is None else Security(context, keys, f"node {args.port}")
    secure = security and security.as_member.secure_client
    pub_port = args.pub_port or args.port + 1
    advertised = args.advertise_host or ("127.0.0.1" if args.host in ("0.0.0.0", "*") else args.host)
    address = f"{advertised}:{args.port}"
    role, master = args.role, None
    if args.role == "slave" and args.master_host is not None:
        master = f"{args.master_host}:{args.master_port}"
    managed = managed_role(lease, data_dir)
    if managed is not None and managed != (role, master if role == "slave" else None):
        log.warning("a router made this node a %s%s at epoch %d; that wins over the command "
                    "line's %s", managed[0], f" of {managed[1]}" if managed[1] else "",
                    lease.epoch, args.role)
        role, master = managed
    source = replica = None
    if role == "master":
        source = ReplicationSource(engine, master_lineage(data_dir, engine.sequence),
                                   args.backlog_bytes, pub_port)
    else:
        replica = Replica(engine, data_dir, address, context, epoch=lease.epoch, secure=secure)
    handler = NodeHandler(engine, role, args.max_value_bytes, source, replica,
                          lease=lease,
                          switch=RoleSwitch(data_dir, address, pub_port, args.backlog_bytes,
                                            context, secure),
                          replication_timeout=args.replication_timeout,
                          min_slaves_to_write=args.min_slaves_to_write,
                          min_slaves_max_lag=args.min_slaves_max_lag,
                          refusals=security and security.refusals)
    server = NodeServer(handler, f"tcp://{args.host}:{args.port}", context,
                        f"tcp://{args.host}:{pub_port}", security)
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: server.stop())
    if args.parent_fd is not None:
        watch_parent(args.parent_fd, server.stop)
    try:
        log.info("%s node on tcp://%s:%d%s, data in %s, fsync=%s, %s", role, args.host,
                 args.port, f" (write log on :{pub_port})" if source else "", data_dir,
                 args.fsync, "CURVE keys from " + args.keys_dir if keys else "no keys")
        if replica is not None:
            if master is not None:  # a router's choice may replace the data (docs/failover.md)
                replica.follow(master, replace_data=managed is not None)
            elif replica.master is not None:
                replica.follow(replica.master)  # a restart resumes where it was
            else:
                log.info("waiting for POST /subscribe to give this slave a master")
        tune_gc_for_serving()
        server.serve()
    except zmq.ZMQError as exc:
        log.error("cannot serve on tcp://%s:%d (or its write log on :%d): %s", args.host,
                  args.port, pub_port, exc)
        return 1
    finally:
        if handler.replica is not None:  # the role may have changed since the start
            handler.replica.stop()
        engine.close()
        if security is not None:
            security.close()
        context.term()
        log.info("node on port %d stopped", args.port)
    return 0


if __name__ == "__main__":
    sys.exit(main())
