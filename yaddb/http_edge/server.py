"""Run the HTTP edge under waitress, in the foreground or in a background thread.

    server = EdgeServer(app, host="127.0.0.1", port=8080).start()   # listening when it returns
    ...
    server.stop()          # from any thread, also a signal handler; idempotent

The router (yaddb/router/main.py) embeds it; this module has no command line of its own.
Why waitress, and the figures it was chosen on: bench/README.md, "Choosing the edge's WSGI
server". In short: its I/O thread reads whole requests before a worker sees them, so slow or
stalled clients hold no worker thread, and its own error replies can be made JSON.

Settings: `threads` 16, each with its own Client (and ZeroMQ socket); `max_request_body_size`
= the app's max_body_bytes (3 x the value limit + 64 KiB), checked on Content-Length before
the body is read (JSON 413, connection closed); `connection_limit` 1024 with poll() (select()
fails past 1024 descriptors); `channel_timeout` 30 s; request bodies over 512 KiB are
buffered in a temporary file, as waitress does by default.
"""
from __future__ import annotations

import json
import logging
import signal
import threading
from typing import Callable, Optional, Sequence

import waitress
from waitress import wasyncore

from yaddb.http_edge.app import EdgeApp

__all__ = ["EdgeServer", "DEFAULT_THREADS", "STOP_TIMEOUT"]

log = logging.getLogger("yaddb.http_edge")

DEFAULT_THREADS = 16          # WSGI worker threads; 4/8/32 served fewer /query per second
STOP_TIMEOUT = 5.0            # seconds a stop waits for requests in progress


class _Waitress:
    """waitress: one asyncore I/O thread reads and buffers whole requests and writes replies;
    a pool of `threads` workers runs the app on complete requests only.

    Body limit: waitress checks Content-Length (and counts chunked bodies) before the app sees
    the request, so its limit is the edge's, and its own error replies (413, 400 for broken
    HTTP, 431, 500) are swapped for the edge's JSON ones via `_json_error_channel`."""

    def __init__(self, app: EdgeApp, host: str, port: int, threads: int) -> None:
        # Our own socket map (create_server's `map`), so stop() can close every socket in it.
        self.socket_map: dict = {}
        self.server = waitress.create_server(
            app, map=self.socket_map, host=host, port=port, threads=threads,
            max_request_body_size=app.max_body_bytes,
            connection_limit=1024,    # open connections (default 100)
            backlog=1024,
            channel_timeout=30,       # seconds an idle or stalled connection is kept
            asyncore_use_poll=True,   # select() fails past 1024 file descriptors
            ident="yaddb")
        self.server.channel_class = _json_error_channel()
        self.serving = False

    @property
    def port(self) -> int:
        return self.server.effective_port

    def serve(self) -> None:
        self.serving = True
        try:
            self.server.run()
        finally:
            self.serving = False

    def stop(self) -> None:
        # Workers first: each finishes the request it runs, queued ones are cancelled.
        self.server.task_dispatcher.shutdown(cancel_pending=True, timeout=STOP_TIMEOUT)
        socket_map = self.socket_map
        if self.serving:
            # Close every socket inside the I/O thread's own loop (its trigger runs the call
            # there); with an empty map the loop, and so serve(), returns.
            self.server.trigger.pull_trigger(lambda: wasyncore.close_all(socket_map))
        else:
            wasyncore.close_all(socket_map)


def _json_error_channel() -> type:
    """waitress's HTTPChannel with error replies as the edge's JSON {"error": ...}.

    waitress renders its own errors (before or instead of the app) as text/plain through
    `HTTPChannel.error_task_class`; this subclass swaps that class. The attribute is not in
    waitress's documented API, so tests/http_edge check the JSON 413 and 400 against the
    pinned version."""
    from waitress.channel import HTTPChannel
    from waitress.task import ErrorTask

    class JsonErrorTask(ErrorTask):
        def execute(self) -> None:
            error = self.request.error
            body = json.dumps({"error": _waitress_error_message(
                error.code, error.reason, error.body,
                self.channel.adj.max_request_body_size)}).encode("utf-8")
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


class EdgeServer:
    """The edge app under waitress, bound to host:port (0 = a free port).

    The socket is bound in the constructor, so a taken port raises there, in the caller.
    `serve()` blocks until `stop()`; `start()` runs it in a background thread. `stop()` may be
    called from any thread or from a signal handler (it never waits for the thread it runs
    in); once the server's threads have ended it closes the app's Clients.
    """

    def __init__(self, app: EdgeApp, host: str = "127.0.0.1", port: int = 8080,
                 threads: int = DEFAULT_THREADS) -> None:
        self.app = app
        self.host = host
        self.threads = threads
        self._impl = _Waitress(app, host, port, threads)
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
        log.info("HTTP edge on %s (waitress, %d threads)", self.url, self.threads)
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

    def is_serving(self) -> bool:
        """True while the background thread of start() runs."""
        return self._thread is not None and self._thread.is_alive()

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
        def handler(signum: int, _frame: object) -> None:
            log.info("signal %d: stopping the HTTP edge", signum)
            self.stop()
            if then is not None:
                then()
        for signum in signals:
            signal.signal(signum, handler)
