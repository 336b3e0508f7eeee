"""bench_http's edge process: the HTTP edge (yaddb.http_edge) in front of one node, under
waitress as in the router (EdgeServer) or, to compare, cheroot (`pip install cheroot`; not in
requirements.txt). The project runs its edge only inside run_router.py; this measures the
edge without the router.

    python3 bench/edge_server.py --backend tcp://127.0.0.1:7000 -p 8080 [--server cheroot]
"""
import argparse
import signal
import threading

from common import LOCALHOST, exit_with_parent
from yaddb import Client
from yaddb.http_edge import EdgeServer, make_app
from yaddb.http_edge.server import DEFAULT_THREADS, STOP_TIMEOUT

CLIENT_TIMEOUT_S = 2.0


class CherootServer:
    """cheroot.wsgi.Server with EdgeServer's start() and stop(): a thread pool fed by a
    selector-based connection manager. It gives the app a request before reading its body,
    so the edge's own Content-Length check answers an oversized body."""

    def __init__(self, app, host: str, port: int, threads: int) -> None:
        from cheroot import wsgi
        self.app = app
        self.server = wsgi.Server((host, port), app, numthreads=threads,
                                  request_queue_size=1024,   # listen backlog (default 5)
                                  timeout=30, shutdown_timeout=STOP_TIMEOUT)
        self.server.max_request_body_size = app.max_body_bytes + (64 << 10)
        self.server.keep_alive_conn_limit = 1024  # idle keep-alive connections kept (default 10)
        self.server.prepare()                     # binds and listens now: errors surface here
        self.thread = threading.Thread(target=self.server.serve, daemon=True)

    def start(self) -> "CherootServer":
        self.thread.start()
        return self

    def stop(self) -> None:
        self.server.stop()
        self.app.close()


SERVERS = {"waitress": EdgeServer, "cheroot": CherootServer}
DEFAULT_SERVER = "waitress"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", required=True, help="the node's ZeroMQ endpoint")
    parser.add_argument("-p", "--port", type=int, required=True, help="HTTP port")
    parser.add_argument("--threads", type=int, default=DEFAULT_THREADS, help="WSGI worker threads")
    parser.add_argument("--server", choices=sorted(SERVERS), default=DEFAULT_SERVER)
    args = parser.parse_args()
    exit_with_parent()
    address = args.backend.split("://", 1)[-1]
    # bench_http asks neither /stats nor /metrics, which show this view of the database
    status = {"partitions": [{"index": 0, "master": address, "alive": True, "keys": None,
                              "slaves": []}]}
    app = make_app(lambda: Client(args.backend, timeout=CLIENT_TIMEOUT_S), lambda: status)
    stopping = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stopping.set())
    server = SERVERS[args.server](app, LOCALHOST, args.port, args.threads).start()
    stopping.wait()
    server.stop()


if __name__ == "__main__":
    main()
