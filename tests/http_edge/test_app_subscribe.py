"""POST /subscribe: bad bodies (400), no subscriber or not a master (418), and what a subscriber
raises mapped to statuses."""
import pytest

from yaddb.errors import BadRequest, NotMaster, Unavailable
from yaddb.http_edge.app import make_app


# --- /subscribe --------------------------------------------------------------------------------

@pytest.mark.parametrize("body, words", [
    ("not json", "not valid JSON"),
    ({"port": 7000}, "missing field(s): ip"),
    ({"ip": "127.0.0.1"}, "missing field(s): port"),
    ({"ip": 5, "port": 7000}, '"ip" must be a string'),
    ({"ip": "", "port": 7000}, "host name or address"),
    # a lone surrogate reached the subscriber, whose address could not be encoded: a 500
    ({"ip": "\ud800", "port": 7000}, "host name or address"),
    ({"ip": "a\x00b", "port": 7000}, "host name or address"),
    ({"ip": "127.0.0.1", "port": 7000, "master": "\ud800:7000"}, "host:port"),
    ({"ip": "127.0.0.1", "port": 0}, "port number"),
    ({"ip": "127.0.0.1", "port": 70000}, "port number"),
    ({"ip": "127.0.0.1", "port": "x"}, "port number"),
    ({"ip": "127.0.0.1", "port": True}, "port number"),
    ({"ip": "127.0.0.1", "port": 7000, "master": "nocolon"}, "host:port"),
    ({"ip": "127.0.0.1", "port": 7000, "master": 5}, "host:port"),
    ({"ip": "127.0.0.1", "port": 7000, "extra": 1}, "unknown field(s) 'extra'"),
])
def test_subscribe_bad_body(edge, body, words):
    reply = edge.call("POST", "/subscribe", body, "application/json")
    assert words in reply.error(400)


def test_subscribe_without_support_is_418(edge, status):
    reply = edge.call("POST", "/subscribe", {"ip": "127.0.0.1", "port": 7001}, "application/json")
    assert reply.error(418).startswith("I am not a master")
    master = status.doc["partitions"][0]["master"]
    reply = edge.call("POST", "/subscribe", {"ip": "127.0.0.1", "port": "7001", "master": master},
                      "application/json")
    assert reply.error(418).startswith("I am not a master")
    reply = edge.call("POST", "/subscribe", {"ip": "127.0.0.1", "port": 7001, "master": "127.0.0.1:9"},
                      "application/json")
    assert "127.0.0.1:9 is not the master of any partition" in reply.error(418)


def test_subscribe_with_a_subscriber(make_edge):
    calls = []

    def subscriber(ip, port, master):
        calls.append((ip, port, master))
        if port == 1:
            raise Unavailable("node 10.0.0.1:1 does not answer")
        if port == 2:
            raise NotMaster("that node is itself a slave")
        if port == 3:
            raise BadRequest("that node already replicates this master")

    status = lambda: {"partitions": [{"index": 0, "master": "127.0.0.1:7000", "slaves": []}]}
    edge = make_edge(make_app(lambda: None, status, subscriber=subscriber))
    sub = lambda doc: edge.call("POST", "/subscribe", doc, "application/json")
    reply = sub({"ip": "127.0.0.1", "port": 7001})
    assert reply.status == 200 and reply.body == b"Subscribed"
    assert sub({"ip": "127.0.0.1", "port": 7002, "master": "tcp://127.0.0.1:7000"}).status == 200
    assert calls == [("127.0.0.1", 7001, None), ("127.0.0.1", 7002, "127.0.0.1:7000")]
    assert "does not answer" in sub({"ip": "10.0.0.1", "port": 1}).error(503)
    assert sub({"ip": "127.0.0.1", "port": 2}).error(418).startswith("I am not a master")
    sub({"ip": "127.0.0.1", "port": 3}).error(400)
