"""An HTTP edge under its real WSGI server on a free loopback port, in front of a thread node;
and the HTTP calls the tests make (HttpCaller, put, query)."""
import http.client
import json
import socket

import pytest

from yaddb.http_edge.app import make_app
from yaddb.http_edge.server import EdgeServer
from tests.node.conftest import ThreadNode

MAX_VALUE = 64 << 10   # small, so oversized bodies are cheap to send
ITEM = {"content_type": "text/plain", "encoding": "utf-8"}


class Reply:
    def __init__(self, status, headers, body):
        self.status = status
        self.headers = headers
        self.body = body

    @property
    def content_type(self):
        return self.headers.get("content-type", "")

    def json(self):
        assert self.content_type.startswith("application/json"), \
            (self.status, self.content_type, self.body[:200])
        return json.loads(self.body)

    def error(self, status):
        """The error message, after checking the status and that the body is JSON {"error": ...}."""
        assert self.status == status, (self.status, self.body[:300])
        doc = self.json()
        assert list(doc) == ["error"] and isinstance(doc["error"], str) and doc["error"], doc
        return doc["error"]


class HttpCaller:
    """HTTP to 127.0.0.1:port; `call` makes one request on a fresh connection."""

    def __init__(self, port):
        self.port = port

    def call(self, method, path, body=None, content_type=None, headers=None):
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        try:
            all_headers = dict(headers or {})
            if content_type is not None:
                all_headers["Content-Type"] = content_type
            if isinstance(body, (dict, list)):
                body = json.dumps(body)
            conn.request(method, path, body=body, headers=all_headers)
            reply = conn.getresponse()
            return Reply(reply.status, {k.lower(): v for k, v in reply.getheaders()}, reply.read())
        finally:
            conn.close()

    def raw(self, data, read_timeout=5.0):
        """Send raw bytes on a fresh connection; returns all the server sends back until it
        closes the connection or the timeout passes."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=read_timeout) as sock:
            sock.sendall(data)
            chunks = []
            try:
                while True:
                    chunk = sock.recv(65536)
                    if not chunk:
                        break
                    chunks.append(chunk)
            except socket.timeout:
                pass
            return b"".join(chunks)


class Edge(HttpCaller):
    """An EdgeServer (the app under waitress) on a free port."""

    def __init__(self, app, **server_options):
        self.app = app
        self.server = EdgeServer(app, "127.0.0.1", 0, **server_options).start()
        super().__init__(self.server.port)

    def stop(self):
        self.server.stop()


def put(edge, doc, content_type="application/json"):
    """PUT /set with doc (a dict, sent as JSON, or the body as it is)."""
    return edge.call("PUT", "/set", json.dumps(doc) if isinstance(doc, dict) else doc, content_type)


def query(edge, body, content_type="text/plain"):
    return edge.call("POST", "/query", body, content_type)


class Status:
    """A status provider whose answer a test can change."""

    def __init__(self, doc):
        self.doc = doc
        self.fail = None

    def __call__(self):
        if self.fail:
            raise self.fail
        return self.doc


@pytest.fixture(scope="module")
def node(tmp_path_factory):
    node = ThreadNode(tmp_path_factory.mktemp("edge-node"))
    yield node
    node.close()


@pytest.fixture(scope="module")
def status(node):
    address = node.endpoint.split("://", 1)[1]
    return Status({"partitions": [
        {"index": 0, "master": address, "alive": True, "keys": 3,
         "slaves": [{"node": "127.0.0.1:1", "alive": False, "lag": 7, "keys": None}]},
        {"index": 1, "master": "127.0.0.1:2", "alive": False, "keys": None, "slaves": ["127.0.0.1:3"],
         "lag": {"127.0.0.1:3": 2}}]})


@pytest.fixture(scope="module")
def edge(node, status):
    edge = Edge(make_app(lambda: node.client(timeout=5.0), status, MAX_VALUE), threads=4)
    yield edge
    edge.stop()


@pytest.fixture
def make_edge():
    """Edges of a test's own (another app), stopped after the test."""
    edges = []

    def start(app, **options):
        edges.append(Edge(app, **options))
        return edges[-1]

    yield start
    for edge in edges:
        edge.stop()
