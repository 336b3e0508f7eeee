"""bench_node's stores: the same calls (set, get, mset, mget, value, close) on our node through
yaddb.Client, on redis-server through redis-py, and on a bare pyzmq echo server with a dict
behind it (what the transport alone allows)."""
import time

from common import LOCALHOST, client_to
from foreign import redis_client

CLIENT_TIMEOUT = 2.0          # seconds, for every request of ours and of redis-py
ECHO_MAX_LIFETIME = 900.0     # the echo server stops by itself after this, whatever happens


class OursStore:
    name = "ours"

    def __init__(self, port):
        self.client = client_to(port, timeout=CLIENT_TIMEOUT)
        self.set, self.get = self.client.set, self.client.get
        self.mset, self.mget = self.client.mset, self.client.mget

    def value(self, key):
        item = self.client.get(key)
        return None if item is None else item.value

    def close(self):
        self.client.close()


class RedisStore:
    name = "redis"

    def __init__(self, port):
        self.r = redis_client(port, timeout=CLIENT_TIMEOUT)
        self.set, self.get = self.r.set, self.r.get

    def mset(self, pairs):
        pipe = self.r.pipeline(transaction=False)
        for key, value in pairs:
            pipe.set(key, value)
        pipe.execute()

    def mget(self, keys):
        pipe = self.r.pipeline(transaction=False)
        for key in keys:
            pipe.get(key)
        return pipe.execute()

    def value(self, key):
        return self.r.get(key)

    def close(self):
        self.r.close()


class EchoStore:
    """A DEALER to echo_server: set/get with the fewest bytes the transport needs."""
    name = "echo"

    def __init__(self, port):
        import zmq
        self.ctx = zmq.Context.instance()
        self.sock = self.ctx.socket(zmq.DEALER)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.setsockopt(zmq.RCVTIMEO, int(CLIENT_TIMEOUT * 1000))
        self.sock.connect("tcp://%s:%d" % (LOCALHOST, port))
        send, recv = self.sock.send_multipart, self.sock.recv_multipart

        def set_(key, value):
            send([b"s", key, value])
            recv()

        def get(key):
            send([b"g", key])
            frames = recv()
            return frames[1] if len(frames) > 1 else None

        self.set = set_
        self.get = self.value = get

    def close(self):
        self.sock.close()


def echo_server(port, stop):
    """A ROUTER with a dict behind it; runs in its own (spawned) process."""
    import zmq
    ctx = zmq.Context()
    sock = ctx.socket(zmq.ROUTER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.RCVTIMEO, 100)
    sock.bind("tcp://%s:%d" % (LOCALHOST, port))
    data = {}
    recv, send = sock.recv_multipart, sock.send_multipart
    give_up = time.monotonic() + ECHO_MAX_LIFETIME
    try:
        while not stop.is_set() and time.monotonic() < give_up:
            try:
                frames = recv()
            except zmq.Again:
                continue
            if frames[1] == b"s":
                data[frames[2]] = frames[3]
                send([frames[0], b"1"])
            else:
                value = data.get(frames[2])
                send([frames[0], b"1", value] if value is not None else [frames[0], b"0"])
    finally:
        sock.close()
        ctx.term()


STORES = {"ours": OursStore, "redis": RedisStore, "echo": EchoStore}
