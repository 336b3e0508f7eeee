"""EdgeServer: one Client per worker thread, and stopping cleanly (directly and from a SIGTERM
handler, the router's pattern)."""
import os
import signal
import threading

import pytest

from yaddb.http_edge.app import make_app
from yaddb.http_edge.server import EdgeServer
from tests.helpers import wait_for
from tests.http_edge.conftest import ITEM, HttpCaller, put, query


# --- threads and shutdown ----------------------------------------------------------------------

def test_one_client_per_thread_and_clean_stop(make_edge, node):
    made = []

    def factory():
        client = node.client(timeout=5.0)
        made.append((threading.get_ident(), client))
        return client

    edge = make_edge(make_app(factory, lambda: {}), threads=4)
    put(edge, {"key": "7e", **ITEM, "value": "v"})
    errors = []

    def hammer():
        try:
            for _ in range(20):
                assert query(edge, "7e").status == 200
        except Exception as exc:  # reported below
            errors.append(exc)

    workers = [threading.Thread(target=hammer) for _ in range(8)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(30)
    assert not errors
    threads = [ident for ident, _ in made]
    assert 1 <= len(made) <= 4 and len(set(threads)) == len(threads)
    stopper = threading.Thread(target=edge.stop)
    stopper.start()
    stopper.join(15)
    assert not stopper.is_alive()
    assert all(client._conn._sock is None for _, client in made)
    with pytest.raises(OSError):
        edge.call("GET", "/ping")


def test_sigterm_handler_stops_a_background_server(node):
    """The router's pattern: the edge serves in a background thread, the main thread's SIGTERM
    handler stops it."""
    app = make_app(lambda: node.client(timeout=5.0), lambda: {})
    server = EdgeServer(app, "127.0.0.1", 0, threads=2).start()
    edge = HttpCaller(server.port)
    assert edge.call("GET", "/ping").status == 200 and query(edge, "00").status == 404
    previous = {signum: signal.getsignal(signum) for signum in (signal.SIGINT, signal.SIGTERM)}
    stopped = []
    try:
        server.install_signal_handlers(then=lambda: stopped.append(True))
        os.kill(os.getpid(), signal.SIGTERM)
        wait_for(lambda: stopped, "the SIGTERM handler", timeout=15)
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    assert not server.is_serving()
    assert len(app.clients) == 0
    with pytest.raises(OSError):
        edge.call("GET", "/ping")
