"""POST /subscribe: make a running node a slave of a partition's master."""
from __future__ import annotations

import logging
from typing import Optional

import zmq

from yaddb.errors import BadRequest, Unavailable, YaddbTimeout
from yaddb.router.server import RouterServer
from yaddb.transport.client_conn import Connection
from yaddb.transport.sockets import Secure

log = logging.getLogger(__name__)


def choose_master(router: RouterServer) -> str:
    """The master of the partition with the fewest slaves (the first of those on a tie)."""
    partitions = router.status()["partitions"]
    if not partitions:
        raise Unavailable("the router is not serving yet; retry in a moment")
    return min(partitions, key=lambda p: (len(p["slaves"]), p["index"]))["master"]


def subscribe(router: RouterServer, context: zmq.Context, ip: str, port: int,
              master: Optional[str], timeout: float, secure: Secure = None) -> None:
    """Tell the node at ip:port to replicate `master` (or the partition with fewest slaves);
    returns once the node has started catching up."""
    node = f"{ip}:{port}"
    if node in router.masters:
        raise BadRequest(f"{node} is the master of partition {router.masters.index(node)}; "
                         f"start a new node with `run_node.py slave` and subscribe that")
    master = master or choose_master(router)
    conn = Connection(f"tcp://{node}", timeout, context, secure=secure)
    try:
        conn.call("follow", [master])  # the node's BadRequest says it is a master
    except YaddbTimeout:
        raise Unavailable(f"the node at {node} did not answer within {timeout:g} s; is "
                          f"`run_node.py slave -p {port}` running there?") from None
    finally:
        conn.close()
    log.info("%s now replicates %s", node, master)
