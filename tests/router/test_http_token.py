"""The HTTP edge's token and protected mode (CONTRACT.md section 8), with real run_router.py
processes: with --http-token every endpoint but /ping needs `Authorization: Bearer TOKEN`, and
an edge beyond loopback without a token refuses to start unless --insecure."""
import json
import urllib.error
import urllib.request

import pytest

from yaddb.transport.keys import make_keys
from tests.helpers import Processes, wait_for
from tests.router.test_run_router import http

TOKEN = "s3cret-token"
ITEM = json.dumps({"content_type": "text/plain", "encoding": "utf-8", "value": "v"}).encode()


def with_token(router, method, path, body=b"", content_type=None, token=TOKEN, scheme="Bearer"):
    request = urllib.request.Request(router.url + path, data=body or None, method=method)
    if content_type:
        request.add_header("Content-Type", content_type)
    if token is not None:
        request.add_header("Authorization", f"{scheme} {token}")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


@pytest.fixture(scope="module")
def guarded(tmp_path_factory):
    directory = tmp_path_factory.mktemp("token")
    processes = Processes(directory)
    try:
        router = processes.router(directory / "data", "--http-token", TOKEN).wait_ready()
        yield router
    finally:
        processes.close()


def test_ping_is_open_and_everything_else_needs_the_token(guarded):
    assert http(guarded, "GET", "/ping") == (200, "PONG")
    for method, path, body, kind in [("GET", "/stats", b"", None), ("GET", "/metrics", b"", None),
                                     ("PUT", "/set", ITEM, "application/json"),
                                     ("POST", "/query", b"6b", "text/plain"),
                                     ("DELETE", "/delete", b"6b", "text/plain")]:
        status, reply = http(guarded, method, path, body, kind)
        assert status == 401, (path, status, reply)
        assert "Authorization: Bearer" in reply["error"]


def test_a_refused_write_stores_nothing_and_the_right_token_works(guarded):
    keyed = json.dumps({"key": "aa01", "content_type": "text/plain", "encoding": "utf-8",
                        "value": "guarded"}).encode()
    for token in (None, "wrong", TOKEN + "x", ""):
        status, _ = with_token(guarded, "PUT", "/set", keyed, "application/json", token=token)
        assert status == 401
    status, _ = with_token(guarded, "POST", "/query", b"aa01", "text/plain")
    assert status == 404  # nothing was stored by the refused writes
    status, _ = with_token(guarded, "PUT", "/set", keyed, "application/json", scheme="bearer")
    assert status == 200
    status, body = with_token(guarded, "POST", "/query", b"aa01", "text/plain")
    assert status == 200 and json.loads(body)["aa01"]["value"] == "guarded"
    status, body = with_token(guarded, "GET", "/stats")
    assert status == 200 and "partitions" in json.loads(body)


def test_refusals_are_logged_without_flooding_the_log(guarded):
    for _ in range(50):
        assert http(guarded, "GET", "/stats")[0] == 401
    wait_for(lambda: "refused" in guarded.log(), "a refusal in the log", 10)
    assert guarded.log().count("without the right token") <= 3


def test_protected_mode_refuses_a_router_beyond_loopback_without_token_or_keys(tmp_path, processes):
    # 192.0.2.1 is a documentation address no machine has: nothing is ever reachable there.
    refused = processes.router(tmp_path / "a", "-H", "192.0.2.1", "--nodes", "127.0.0.1:9")
    assert refused.child.wait(30) == 2
    assert "--http-token" in refused.log() and "--insecure" in refused.log()
    assert "--keys-dir" in refused.log()  # every missing protection named at once
    keys = tmp_path / "keys"
    make_keys(str(keys))
    keyed = processes.router(tmp_path / "k", "-H", "192.0.2.1", "--nodes", "127.0.0.1:9",
                             "--keys-dir", str(keys))
    assert keyed.child.wait(30) == 2
    assert "--http-token" in keyed.log() and "--keys-dir" not in keyed.log()
    overridden = processes.router(tmp_path / "b", "-H", "192.0.2.1", "--nodes", "127.0.0.1:9",
                                  "--insecure")
    assert overridden.child.wait(60) == 1  # past protected mode, it cannot bind there
    assert "INSECURE" in overridden.log() and "cannot serve" in overridden.log()
