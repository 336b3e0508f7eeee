import threading

import pytest
import zmq

from yaddb import Client
from yaddb.lsm import Engine
from yaddb.limits import BLOB_OVERHEAD
from yaddb.node.handler import NodeHandler
from yaddb.node.server import NodeServer
from tests.helpers import free_port


class ThreadNode:
    """A node's event loop in a thread of the test process, on a free loopback port."""

    def __init__(self, directory, role="master", max_value_bytes=4 << 20, **engine_options):
        engine_options.setdefault("compaction", "thread")
        self.engine = Engine(str(directory), max_value_bytes=max_value_bytes + BLOB_OVERHEAD,
                             **engine_options)
        self.handler = NodeHandler(self.engine, role, max_value_bytes)
        self.context = zmq.Context()
        self.endpoint = f"tcp://127.0.0.1:{free_port()}"
        self.server = NodeServer(self.handler, self.endpoint, self.context)
        self.thread = threading.Thread(target=self.server.serve, daemon=True)
        self.thread.start()
        assert self.server.ready.wait(30)
        self.clients = []

    def client(self, timeout=5.0, **options):
        client = Client(self.endpoint, timeout=timeout, context=self.context, **options)
        self.clients.append(client)
        return client

    def close(self):
        for client in self.clients:
            client.close()
        self.server.stop()
        self.thread.join(30)
        assert not self.thread.is_alive(), "the node loop did not stop"
        self.engine.close()
        self.context.term()


@pytest.fixture
def thread_node(tmp_path):
    nodes = []

    def start(**options):
        node = ThreadNode(tmp_path / f"node{len(nodes)}", **options)
        nodes.append(node)
        return node

    yield start
    for node in nodes:
        node.close()
