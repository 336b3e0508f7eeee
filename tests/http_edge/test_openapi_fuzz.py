"""The HTTP edge against its own OpenAPI description (GET /openapi.json, yaddb/http_edge/openapi.py).

First, without a process: the document is valid OpenAPI, its paths and methods are exactly the
Bottle app's routes (and those the 404 names), and with a token every operation it marks as
protected answers 401.

Then schemathesis fuzzes a real `run_router.py` (the embedded cluster) through the document
the router itself serves: every operation, in its examples, coverage (boundary values, wrong
types, missing fields, unsupported and malformed Content-Types, methods the path does not
take) and fuzzing phases, with valid and invalid data. Each answer must be a status the
operation documents, with a documented Content-Type and a body matching its schema (every
error is JSON {"error": ...}), and never a 500. Afterwards the router still serves: ping, a
set/query/delete round trip, and nothing in its log about a failed request.

Bounded and reproducible: hypothesis is derandomized, has no example database, and each
operation's fuzzing phase gets FUZZ_EXAMPLES cases; the whole module takes about 20 s.

What a fuzzed request may reach: loopback only. A /subscribe body the edge would act on is
pointed at partition 0's master, which the router refuses at once (400: a master cannot be
subscribed), so no node changes role and nothing is dialled beyond this machine; one test of
its own subscribes a closed loopback port and gets 503 within the router's timeout. Writes
with ?w= above the partition's two members wait the replication timeout, set to 0.5 s here.
"""
import copy
import http.client
import json
import time
from collections import Counter

import bottle
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from openapi_spec_validator import validate
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (content_type_conformance,
                                               response_schema_conformance,
                                               status_code_conformance)

from yaddb.http_edge import openapi
from yaddb.http_edge.app import make_app
from yaddb.http_edge.messages import ENDPOINTS, subscribe_fields
from yaddb.supervisor import free_port
from tests.helpers import Processes

FUZZ_EXAMPLES = 25  # per operation, in the fuzzing phase (the coverage phase adds its own)
GARBAGE_EXAMPLES = 150  # raw requests, over all operations
METHODS = ("get", "put", "post", "delete", "patch", "head", "options", "trace")
CASES: Counter = Counter()  # cases sent, by (operation, status)


# ---------------------------------------------------------------------------------------------
# The document itself
# ---------------------------------------------------------------------------------------------

def test_the_document_is_valid_openapi_and_served_as_it_is():
    validate(copy.deepcopy(openapi.SPEC))
    assert json.loads(openapi.DOCUMENT) == openapi.SPEC
    app = make_app(_no_client, dict)
    status, headers, body = _wsgi(app, "GET", "/openapi.json")
    assert (status, headers["Content-Type"], body) == (200, "application/json", openapi.DOCUMENT)


def test_the_documented_operations_are_the_apps_routes():
    app = make_app(_no_client, dict)
    routes = {(route.rule, route.method.lower()) for route in app.bottle.routes}
    documented = {(path, method) for path, item in openapi.SPEC["paths"].items()
                  for method in item if method in METHODS}
    assert documented == routes
    # and the 404 for an unknown path lists them all
    assert {(path, method.lower()) for method, path in ENDPOINTS} == routes


def test_with_a_token_every_operation_but_ping_answers_a_documented_401():
    app = make_app(_no_client, dict, http_token="secret")
    for path, item in openapi.SPEC["paths"].items():
        for method, operation in item.items():
            status, headers, body = _wsgi(app, method.upper(), path)
            if operation.get("security") == []:
                assert status != 401, (method, path)
                assert "401" not in operation["responses"], (method, path)
            else:
                assert status == 401 and "401" in operation["responses"], (method, path, status)
                assert headers["WWW-Authenticate"].startswith("Bearer")
                assert list(json.loads(body)) == ["error"]


def _no_client():
    raise AssertionError("these requests never reach the database")


def _wsgi(app, method, path):
    """(status, headers, body) of one request to a WSGI app, in this thread."""
    environ = {"REQUEST_METHOD": method, "PATH_INFO": path, "SERVER_NAME": "localhost",
               "SERVER_PORT": "80", "wsgi.url_scheme": "http", "wsgi.input": _Empty(),
               "wsgi.errors": _Empty(), "CONTENT_LENGTH": "0"}
    started = {}

    def start_response(status, headers, exc_info=None):
        started["status"], started["headers"] = int(status.split()[0]), dict(headers)
        return lambda data: None

    body = b"".join(app(environ, start_response))
    return started["status"], started["headers"], body


class _Empty:
    def read(self, *_):
        return b""

    def write(self, *_):
        pass

    def flush(self):
        pass


# ---------------------------------------------------------------------------------------------
# A real router, fuzzed
# ---------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def router(tmp_path_factory):
    directory = tmp_path_factory.mktemp("openapi-fuzz")
    processes = Processes(directory)
    try:
        router = processes.router(directory / "data", "--replication-timeout", "0.5")
        router.wait_ready()
        yield router
    finally:
        processes.close()


@pytest.fixture(scope="module")
def masters(router):
    status, stats = _call(router, "GET", "/stats")
    assert status == 200
    return [partition["master"] for partition in stats["partitions"]]


@pytest.fixture(scope="module")
def served_schema(router):
    """The document the router serves, set up for a bounded, reproducible run. Loaded from
    its JSON rather than its URL: schemathesis skips the path a schema was loaded from, and
    GET /openapi.json is an operation like the others."""
    status, document = _call(router, "GET", "/openapi.json")
    assert status == 200 and document == openapi.SPEC
    schema = schemathesis.openapi.from_dict(document)
    schema.config.update(base_url=router.url, request_timeout=15)
    schema.config.generation.update(modes=list(schemathesis.GenerationMode),
                                    max_examples=FUZZ_EXAMPLES, deterministic=True)
    schema.config.phases.update(phases=["examples", "coverage", "fuzzing"])
    return schema


fuzzed = schemathesis.pytest.from_fixture("served_schema")


@fuzzed.parametrize()
@settings(max_examples=FUZZ_EXAMPLES, deadline=None, derandomize=True, database=None,
          suppress_health_check=list(HealthCheck))
def test_every_answer_is_documented_json_and_never_a_500(case, router, masters):
    _keep_subscribe_harmless(case, masters[0])
    response = case.call()
    CASES[case.operation.label, response.status_code] += 1
    case.validate_response(response, checks=CHECKS)


def not_a_500(ctx, response, case):
    """schemathesis's not_a_server_error, but for 503: the edge's documented answer when the
    database does not answer in time (a ?w=999 write, say), which status_code_conformance
    still checks is documented for the operation."""
    if response.status_code != 503:
        return not_a_server_error(ctx, response, case)
    return None


CHECKS = [not_a_500, status_code_conformance, content_type_conformance,
          response_schema_conformance]


def _keep_subscribe_harmless(case, master):
    """A /subscribe body the edge would act on names partition 0's master instead of the node
    it names: the router refuses that at once (400) and dials nothing."""
    if case.operation.path != "/subscribe" or not isinstance(case.body, dict):
        return
    try:
        subscribe_fields(case.body)
    except bottle.HTTPResponse:
        return  # the edge refuses it (400) before anything is dialled
    host, _, port = master.rpartition(":")
    case.body = {**case.body, "ip": host, "port": int(port)}


OPERATIONS = [(method.upper(), path) for path, item in openapi.SPEC["paths"].items()
              for method in item]
GARBAGE_TYPES = [None, "application/json", "application/json; charset=latin-1", "text/plain",
                 "text/plain; charset=utf-8", "application/octet-stream", "TEXT/PLAIN",
                 "application/x-www-form-urlencoded", "multipart/form-data; boundary=x",
                 "text/html", "*/*", "application/", ";", "\u00e9/\u00e9", ""]
HEADER_CHARACTERS = st.characters(min_codepoint=0x20, max_codepoint=0xff)  # what HTTP/1.1 carries


@settings(max_examples=GARBAGE_EXAMPLES, deadline=None, derandomize=True, database=None,
          suppress_health_check=list(HealthCheck))
@given(operation=st.sampled_from(OPERATIONS),
       content_type=st.sampled_from(GARBAGE_TYPES) | st.text(HEADER_CHARACTERS, max_size=30),
       body=st.binary(max_size=300) | st.sampled_from(
           [b"{}", b"[]", b"null", b'{"key": 1}', b'{"value": "x"}', b"\xff\xfe", b"0" * 3000,
            b'{"ip": "127.0.0.1", "port": "x"}', b"{" * 5000, b"  abcd  ", b"\x00"]),
       query=st.sampled_from(["", "?w=", "?w=0", "?w=1", "?w=majority", "?w=-1", "?w=all&w=2",
                              "?w=%ff", "?x=1"]),
       accept=st.sampled_from([None, "application/openmetrics-text", "text/plain", "*/*",
                               "application/json", "x"]),
       chunked=st.booleans())
def test_garbage_bodies_and_content_types_get_documented_json_errors(
        router, masters, operation, content_type, body, query, accept, chunked):
    """Beyond the schema: any body with any Content-Type (or none, or a malformed one), sent
    whole or chunked, to every operation."""
    method, path = operation
    if path == "/subscribe":
        body = _harmless_subscribe_body(body, masters[0])
    headers = {} if content_type is None else {"Content-Type": content_type}
    if accept is not None:
        headers["Accept"] = accept
    conn = http.client.HTTPConnection("127.0.0.1", router.http_port, timeout=30)
    try:
        if chunked:
            conn.request(method, path + query, body=iter([body[:7], body[7:]]), headers=headers,
                         encode_chunked=True)
        else:
            conn.request(method, path + query, body=body, headers=headers)
        reply = conn.getresponse()
        status, raw = reply.status, reply.read()
        reply_type = reply.getheader("Content-Type", "")
    finally:
        conn.close()
    CASES[f"{method} {path}", status] += 1
    responses = openapi.SPEC["paths"][path][method.lower()]["responses"]
    assert str(status) in responses, (status, raw[:300])
    if status == 200:
        documented = {media.split(";")[0] for media in responses["200"]["content"]}
        assert reply_type.split(";")[0] in documented, (reply_type, documented)
    else:
        assert reply_type == "application/json", (status, reply_type, raw[:300])
        doc = json.loads(raw)
        assert list(doc) == ["error"] and isinstance(doc["error"], str) and doc["error"], doc


def _harmless_subscribe_body(body, master):
    """The body, or, if the edge would act on it, one naming partition 0's master instead."""
    try:
        doc = json.loads(body)
        if not isinstance(doc, dict):
            return body
        subscribe_fields(doc)
    except (ValueError, RecursionError, bottle.HTTPResponse):
        return body
    host, _, port = master.rpartition(":")
    return json.dumps({**doc, "ip": host, "port": int(port)}).encode()


def test_the_router_still_serves_after_the_fuzzing(router, masters):
    if CASES:  # the fuzzing ran in this session: it reached every operation, and the
        # endpoints that take a body both took and refused some
        documented = {f"{method.upper()} {path}" for path, item in openapi.SPEC["paths"].items()
                      for method in item}
        assert {label for label, _ in CASES} == documented, CASES
        for label in ("PUT /set", "POST /query", "DELETE /delete", "POST /subscribe"):
            assert (label, 400) in CASES, CASES
        for label in ("PUT /set", "POST /query", "DELETE /delete"):
            assert (label, 200) in CASES, CASES
    assert router.running
    assert _call(router, "GET", "/ping") == (200, "PONG")
    item = {"content_type": "text/plain", "encoding": "utf-8", "value": "still here \u00e9"}
    status, stored = _call(router, "PUT", "/set", json.dumps(item), "application/json")
    assert status == 200, stored
    (key,) = stored
    assert _call(router, "POST", "/query", key, "text/plain") == (200, {key: item})
    assert _call(router, "DELETE", "/delete?w=all", key, "text/plain") == (200, {"deleted": key})
    assert _call(router, "POST", "/query", key, "text/plain")[0] == 404
    status, stats = _call(router, "GET", "/stats")  # the same cluster: no node was subscribed
    assert status == 200 and [p["master"] for p in stats["partitions"]] == masters
    assert all(p["alive"] and len(p["slaves"]) == 1 for p in stats["partitions"]), stats
    log = router.log()
    assert "Traceback" not in log and " ERROR yaddb.http_edge" not in log, log[-4000:]


def test_subscribing_a_node_that_is_not_there_is_a_503_within_the_timeout(router):
    started = time.monotonic()
    status, reply = _call(router, "POST", "/subscribe",
                          json.dumps({"ip": "127.0.0.1", "port": free_port()}), "application/json")
    assert status == 503 and "did not answer" in reply["error"], reply
    assert time.monotonic() - started < 10  # the router's node timeout + 1 s, and some room


def _call(router, method, path, body=None, content_type=None):
    """(status, parsed JSON or text) of one request to the router's edge."""
    conn = http.client.HTTPConnection("127.0.0.1", router.http_port, timeout=30)
    try:
        conn.request(method, path, body=body,
                     headers={"Content-Type": content_type} if content_type else {})
        reply = conn.getresponse()
        raw = reply.read()
        if reply.getheader("Content-Type", "").startswith("application/json"):
            return reply.status, json.loads(raw)
        return reply.status, raw.decode()
    finally:
        conn.close()
