"""Run the HTTP edge under a production WSGI server, in the foreground or in a background thread.

    server = EdgeServer(app, host="127.0.0.1", port=8080).start()   # listening when it returns
    ...
    server.stop()          # from any thread, also a signal handler; idempotent

`python3 -m yaddb.http_edge.server --backend tcp://127.0.0.1:7000` serves the edge in front of
one node or router (for benchmarks and trying it out; the router embeds EdgeServer itself).

The WSGI server: waitress (pinned in requirements.txt), 16 worker threads
-------------------------------------------------------------------------
Measured with bench/bench_http.py on this project's machine (2 CPUs): wrk, 16 keep-alive
connections, 2 wrk threads, 10 s per workload, 3 rounds alternating the servers (best round),
against a run_node.py node (--fsync interval); req/s, and the edge's CPU time per request:

    placement                              server     /ping          /query        /set
    --pin split: edge alone on one CPU,    waitress   10751  91 us   6414 154 us   5811 167 us
      node and wrk on the other            cheroot     9866 101 us   6333 157 us   5959 166 us
    --pin none: all on both CPUs           waitress    6366 174 us   3497 300 us   3633 285 us
                                           cheroot     4140 262 us   2587 392 us   2474 403 us

/query / /ping: waitress 0.60x split, 0.55x unpinned; cheroot 0.64x, 0.62x (its /ping is
slower, not its /query faster). The goal of 0.7x is missed by both: a /query costs the edge
about 60 us more CPU than a /ping (split), of which the app's own work (key parsing, JSON)
is about 6 us and the rest is the ZeroMQ round trip in the Client (send, I/O-thread hand-offs,
receive); the same get costs a single-threaded Client about 45 us of CPU. Worker threads
(waitress, split, one 5 s round each): 4 / 8 / 32 gave /query 5074 / 5830 / 6157 req/s,
against 6414 with 16, so 16. Latency p99 (split): waitress /ping 4.8 ms, /query 6.6 ms;
cheroot /ping 18 ms, /query 4.5 ms.

Chosen: waitress. It is as fast or faster in both placements (much faster when the edge
shares its CPUs), and sturdier for a database front: its I/O thread reads whole requests
before a worker sees them, so slow or stalled clients hold no worker thread (cheroot gives a
worker to each connection with a request in progress), and its own error replies (413, 400
for broken HTTP, 431) can be swapped for the edge's JSON ones (`_json_error_channel`), which
cheroot's `simple_response` does not allow. cheroot stays here as an unpinned alternative so
the comparison can be rerun: `pip install cheroot; python3 bench/bench_http.py --servers
waitress,cheroot --rounds 3`.

Settings: `threads` 16; `max_request_body_size` = the app's max_body_bytes (3 x the value
limit + 64 KiB), checked on Content-Length before the body is read (JSON 413, connection
closed); `connection_limit` 1024 with poll() (select() fails past 1024 descriptors);
`channel_timeout` 30 s; request bodies over 512 KiB are buffered in a temporary file, as
waitress does by default.
"""
from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import threading
from typing import Callable, Optional, Sequence

from yaddb.http_edge.app import EdgeApp

log = logging.getLogger("yaddb.http_edge")

DEFAULT_THREADS = 16          # WSGI worker threads; each has its own Client (and ZeroMQ socket)
DEFAULT_BACKEND = "waitress"
STOP_TIMEOUT = 5.0            # seconds a stop waits for requests in progress
CHOICE_SUMMARY = ("Measured on 2 CPUs, edge alone on one (req/s /ping, /query, /set): waitress "
                  "10751, 6414, 5811; cheroot 9866, 6333, 5959. All on both CPUs: waitress "
                  "6366, 3497, 3633; cheroot 4140, 2587, 2474. waitress chosen: as fast or "
                  "faster, and slow clients hold no worker (yaddb/http_edge/server.py).")


class _Waitress:
    """waitress: one asyncore I/O thread reads and buffers whole requests and writes replies;
    a pool of `threads` workers runs the app on complete requests only.

    Body limit: waitress checks Content-Length (and counts chunked bodies) before the app sees
    the request, so its limit is the edge's, and its own error replies (413, 400 for broken
    HTTP, 431, 500) are swapped for the edge's JSON ones via `_JsonErrorChannel`."""

    def __init__(self, app: EdgeApp, host: str, port: int, threads: int) -> None:
        import waitress
        self.server = waitress.create_server(
            app, host=host, port=port, threads=threads,
            max_request_body_size=app.max_body_bytes,
            connection_limit=1024,    # open connections (default 100)
            backlog=1024,
            channel_timeout=30,       # seconds an idle or stalled connection is kept
            asyncore_use_poll=True,   # select() fails past 1024 file descriptors
            ident="yaddb")
        self.server.channel_class = _json_error_channel()
        self._serving = False

    @property
    def port(self) -> int:
        return self.server.effective_port

    def serve(self) -> None:
        self._serving = True
        try:
            self.server.run()
        finally:
            self._serving = False

    def stop(self) -> None:
        from waitress import wasyncore
        # Workers first: each finishes the request it runs, queued ones are cancelled.
        self.server.task_dispatcher.shutdown(cancel_pending=True, timeout=STOP_TIMEOUT)
        server_map = self.server._map   # a single listening socket: TcpWSGIServer
        if self._serving:
            # Close every socket inside the I/O thread's own loop (its trigger runs the call
            # there); with an empty map the loop, and so serve(), returns.
            self.server.trigger.pull_trigger(lambda: wasyncore.close_all(server_map))
        else:
            wasyncore.close_all(server_map)


def _json_error_channel():
    """waitress's HTTPChannel with error replies as the edge's JSON {"error": ...}.

    waitress renders its own errors (before or instead of the app) as text/plain through
    `HTTPChannel.error_task_class`; this subclass swaps that class. The attribute is not in
    waitress's documented API, so tests/http_edge check the JSON 413 against the pinned
    version."""
    from waitress.channel import HTTPChannel
    from waitress.task import ErrorTask

    class JsonErrorTask(ErrorTask):
        def execute(self) -> None:
            error = self.request.error
            body = _json_error(_waitress_error_message(error.code, error.reason, error.body,
                                                       self.channel.adj.max_request_body_size))
            self.status = f"{error.code} {error.reason}"
            self.response_headers.append(("Content-Type", "application/json"))
            self.set_close_on_finish()
            self.content_length = len(body)
            self.write(body)

    class JsonErrorChannel(HTTPChannel):
        error_task_class = JsonErrorTask

    return JsonErrorChannel


def _waitress_error_message(code: int, reason: str, detail: str, max_body: int) -> str:
    if code == 413:
        return f"the request body is over {max_body} bytes, the limit; nothing was stored"
    if code == 431:
        return "the request's headers are too large"
    if code >= 500:
        return "internal error in the HTTP edge; the router's log has the details"
    if code == 400:
        return f"malformed HTTP request: {detail}"
    return f"{reason}: {detail}"


def _json_error(message: str) -> bytes:
    return json.dumps({"error": message}).encode("utf-8")


class _Cheroot:
    """cheroot.wsgi.Server, for comparison only (bench/bench_http.py --servers; not in
    requirements.txt): a thread pool fed by a selector-based connection manager. The app
    sees a request before its body is read, so the edge's own Content-Length check answers
    an oversized body in JSON; cheroot's limit just above it would answer in text/plain."""

    def __init__(self, app: EdgeApp, host: str, port: int, threads: int) -> None:
        from cheroot import wsgi
        self.server = wsgi.Server((host, port), app, numthreads=threads,
                                  request_queue_size=1024,   # listen backlog (default 5)
                                  timeout=30, shutdown_timeout=STOP_TIMEOUT)
        self.server.max_request_body_size = app.max_body_bytes + (64 << 10)
        self.server.keep_alive_conn_limit = 1024  # idle keep-alive connections kept (default 10)
        self.server.prepare()                     # binds and listens now: errors surface here

    @property
    def port(self) -> int:
        return self.server.bind_addr[1]

    def serve(self) -> None:
        self.server.serve()

    def stop(self) -> None:
        self.server.stop()


BACKENDS = {"waitress": _Waitress, "cheroot": _Cheroot}


class EdgeServer:
    """The edge app under a WSGI server (`backend`), bound to host:port (0 = a free port).

    The socket is bound in the constructor, so a taken port raises there, in the caller.
    `serve()` blocks until `stop()`; `start()` runs it in a background thread. `stop()` may be
    called from any thread or from a signal handler (it never waits for the thread it runs
    in); once the server's threads have ended it closes the app's Clients.
    """

    def __init__(self, app: EdgeApp, host: str = "127.0.0.1", port: int = 8080,
                 threads: int = DEFAULT_THREADS, backend: str = DEFAULT_BACKEND) -> None:
        if backend not in BACKENDS:
            raise ValueError(f"unknown WSGI server {backend!r}; choose one of {sorted(BACKENDS)}")
        self.app = app
        self.host = host
        self.threads = threads
        self.backend = backend
        self._impl = BACKENDS[backend](app, host, port, threads)
        self.port = self._impl.port
        self._thread: Optional[threading.Thread] = None
        self._serving_thread: Optional[int] = None
        self._lock = threading.Lock()
        self._stopped = threading.Event()
        self._stopping = False

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def serve(self) -> None:
        """Serve in this thread until stop()."""
        self._serving_thread = threading.get_ident()
        log.info("HTTP edge on %s (%s, %d threads)", self.url, self.backend, self.threads)
        try:
            self._impl.serve()
        finally:
            self._serving_thread = None

    def start(self) -> "EdgeServer":
        """Serve in a background thread; returns at once (the socket already listens)."""
        self._thread = threading.Thread(target=self._serve_then_note, name="yaddb-http-edge",
                                        daemon=True)
        self._thread.start()
        return self

    def _serve_then_note(self) -> None:
        try:
            self.serve()
        except Exception:
            log.exception("the HTTP edge stopped on an error")

    def stop(self, timeout: float = 2 * STOP_TIMEOUT) -> None:
        """Stop accepting, let requests in progress finish (up to STOP_TIMEOUT), close the app's
        Clients. Safe from any thread and from a signal handler; a second call waits for the
        first one's work."""
        with self._lock:
            first = not self._stopping
            self._stopping = True
        here = threading.get_ident()
        if here == self._serving_thread:
            # A signal handler interrupting serve() in this very thread: stopping here would
            # wait on ourselves. Do it from a helper thread; serve() returns when it is done.
            if first:
                threading.Thread(target=self._stop_now, name="yaddb-http-edge-stop",
                                 daemon=True).start()
            return
        if first:
            self._stop_now()
        self._stopped.wait(timeout)
        if self._thread is not None and self._thread.ident != here:
            self._thread.join(timeout)
            if self._thread.is_alive():
                log.warning("the HTTP edge thread did not stop within %g s", timeout)

    def _stop_now(self) -> None:
        try:
            self._impl.stop()
        except Exception:
            log.exception("stopping the HTTP edge")
        finally:
            self.app.close()
            self._stopped.set()
            log.info("HTTP edge on %s stopped", self.url)

    def install_signal_handlers(self, signals: Sequence[int] = (signal.SIGINT, signal.SIGTERM),
                                then: Optional[Callable[[], None]] = None) -> None:
        """Make SIGINT/SIGTERM stop this server (main thread only, as Python requires);
        `then` runs after it, e.g. to stop the rest of a process."""
        def handler(signum, _frame) -> None:
            log.info("signal %d: stopping the HTTP edge", signum)
            self.stop()
            if then is not None:
                then()
        for signum in signals:
            signal.signal(signum, handler)


# ---------------------------------------------------------------------------------------------
# Standalone: the edge in front of one node or router
# ---------------------------------------------------------------------------------------------

def _single_backend_status(app_holder: dict) -> Callable[[], dict]:
    """The router's view, for an edge in front of one node: a single partition."""
    def status() -> dict:
        app = app_holder["app"]
        address = app_holder["endpoint"].split("://", 1)[-1]
        try:  # runs in a worker thread, in a request: that thread's Client serves it
            keys = app.client().stats().get("keys_estimate")
            alive = True
        except Exception:
            keys, alive = None, False
        return {"partitions": [{"index": 0, "master": address, "alive": alive,
                                "keys": keys if isinstance(keys, int) else None, "slaves": []}]}
    return status


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python3 -m yaddb.http_edge.server",
        description="The YADDB HTTP edge in front of one node or router (ZeroMQ endpoint).")
    parser.add_argument("--backend", required=True, help="ZeroMQ endpoint, e.g. tcp://127.0.0.1:5555")
    parser.add_argument("-H", "--host", default="127.0.0.1", help="address to bind")
    parser.add_argument("-p", "--port", type=int, default=8080, help="HTTP port (0: a free one)")
    parser.add_argument("--threads", type=int, default=DEFAULT_THREADS, help="WSGI worker threads")
    parser.add_argument("--server", default=DEFAULT_BACKEND, choices=sorted(BACKENDS),
                        help="WSGI server (only the default is in requirements.txt)")
    parser.add_argument("--timeout", type=float, default=2.0, help="seconds per database call")
    parser.add_argument("--max-value-bytes", type=int, default=4 << 20, help="largest value")
    parser.add_argument("--log-level", default="INFO")
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    from yaddb import Client
    from yaddb.http_edge.app import make_app
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    holder = {"endpoint": args.backend}
    app = make_app(lambda: Client(args.backend, timeout=args.timeout,
                                  max_value_bytes=args.max_value_bytes),
                   _single_backend_status(holder), args.max_value_bytes)
    holder["app"] = app
    try:
        server = EdgeServer(app, args.host, args.port, args.threads, args.server)
    except OSError as exc:
        log.error("cannot listen on %s:%d: %s", args.host, args.port, exc)
        return 1
    server.install_signal_handlers()
    print(f"HTTP edge listening on {server.url}", flush=True)
    server.serve()
    server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
