"""The `yaddb` command (and `python3 -m yaddb`): a client and tools, like redis-cli.

Built on click: subcommands, options from YADDB_* variables (shown in --help), and one clear
line on standard error with a non-zero exit for every failure. Values go to standard output
as their bytes, so `yaddb get k > file` keeps binary values intact.
"""
from __future__ import annotations

import json
import sys
import threading
import time
from typing import Optional

import click

from yaddb.errors import YaddbError

DEFAULT_ENDPOINT = "tcp://127.0.0.1:5555"  # the one-command cluster's native front
NO_SUCH_KEY = 1  # exit code of get/del on a missing key: not an error of the command


class Failed(click.ClickException):
    """A failure said in one line: `yaddb: <what>`, exit code 1 (2 for usage, as click)."""

    def show(self, file=None) -> None:
        click.echo(f"yaddb: {self.format_message()}", err=True)


def _key(text: str, as_hex: bool) -> bytes:
    if not as_hex:
        return text.encode("utf-8")
    try:
        return bytes.fromhex(text)
    except ValueError:
        raise Failed(f"{text!r} is not hex (pairs of 0-9, a-f)") from None


def _concern(w: str):
    """-w as the client takes it: a number of members, or majority / all (checked there)."""
    return int(w) if w.isdigit() else w


class Context:
    """The connection options, opened into a client on first use: the native Client, or with
    --url the HTTP edge's (same calls)."""

    def __init__(self, endpoint: str, keys_dir: Optional[str], timeout: float,
                 url: Optional[str], http_token: Optional[str]) -> None:
        self.endpoint, self.keys_dir, self.timeout = endpoint, keys_dir, timeout
        self.url, self.http_token = url, http_token
        self._client = None

    def new_client(self):
        """A client of its own (bench gives one to each thread)."""
        # Imported here: `yaddb keygen` needs no connection.
        if self.url is not None:
            from yaddb.http_edge.remote import EdgeClient
            return EdgeClient(self.url, self.timeout, self.http_token)
        from yaddb.client import Client
        try:
            return Client(self.endpoint, timeout=self.timeout, keys=self.keys_dir)
        except YaddbError as exc:
            raise Failed(str(exc)) from None

    def client(self):
        if self._client is None:
            self._client = self.new_client()
        return self._client

    def close(self) -> None:
        if self._client is not None:
            self._client.close()


def _call(ctx: Context, what):
    try:
        return what(ctx.client())
    except YaddbError as exc:
        raise Failed(str(exc)) from None


@click.group(context_settings={"help_option_names": ["-h", "--help"], "show_default": True})
@click.option("--endpoint", "-e", default=DEFAULT_ENDPOINT, envvar="YADDB_ENDPOINT", show_envvar=True,
              help="the router's native front (or a node's port)")
@click.option("--keys-dir", envvar="YADDB_KEYS_DIR", show_envvar=True,
              type=click.Path(file_okay=False),
              help="a client key and the cluster's member.key, for a cluster with CURVE keys")
@click.option("--timeout", default=2.0, envvar="YADDB_TIMEOUT", show_envvar=True,
              help="seconds a call may take")
@click.option("--url", envvar="YADDB_URL", show_envvar=True,
              help="talk to the HTTP edge (http://HOST:PORT) instead of --endpoint")
@click.option("--http-token", envvar="YADDB_HTTP_TOKEN", show_envvar=True,
              help="the edge's token, with --url")
@click.pass_context
def main(click_ctx: click.Context, endpoint: str, keys_dir: Optional[str], timeout: float,
         url: Optional[str], http_token: Optional[str]) -> None:
    """YADDB's command-line client and tools. Keys are text unless --hex is given."""
    click_ctx.obj = Context(endpoint, keys_dir, timeout, url, http_token)
    click_ctx.call_on_close(click_ctx.obj.close)


@main.command()
@click.argument("key")
@click.option("--hex", "as_hex", is_flag=True, help="KEY is hex")
@click.pass_obj
def get(ctx: Context, key: str, as_hex: bool) -> None:
    """Print a key's value (its bytes, as stored)."""
    item = _call(ctx, lambda client: client.get(_key(key, as_hex)))
    if item is None:
        click.echo(f"yaddb: no such key: {key}", err=True)
        sys.exit(NO_SUCH_KEY)
    out = click.get_binary_stream("stdout")
    out.write(item.value)
    if sys.stdout.isatty():
        out.write(b"\n")
    out.flush()


@main.command(name="set")
@click.argument("key")
@click.argument("value", required=False)
@click.option("--hex", "as_hex", is_flag=True, help="KEY is hex")
@click.option("--content-type", help="stored with the value (default: text/plain for an "
              "argument, application/octet-stream from standard input)")
@click.option("--encoding", help="stored with the value (default: utf-8 or binary, as above)")
@click.option("-w", "w", default="1", envvar="YADDB_W", show_envvar=True,
              help="write concern: a number of members, majority or all")
@click.pass_obj
def set_(ctx: Context, key: str, value: Optional[str], as_hex: bool, content_type: Optional[str],
         encoding: Optional[str], w: str) -> None:
    """Store VALUE under KEY; with no VALUE (or -), the bytes of standard input."""
    data = click.get_binary_stream("stdin").read() if value in (None, "-") else value
    concern = _concern(w)
    _call(ctx, lambda client: client.set(_key(key, as_hex), data, content_type, encoding, w=concern))
    click.echo("OK")


@main.command(name="del")
@click.argument("key")
@click.option("--hex", "as_hex", is_flag=True, help="KEY is hex")
@click.pass_obj
def delete(ctx: Context, key: str, as_hex: bool) -> None:
    """Delete KEY; exit code 1 when there was no such key."""
    if not _call(ctx, lambda client: client.delete(_key(key, as_hex))):
        click.echo(f"yaddb: no such key: {key}", err=True)
        sys.exit(NO_SUCH_KEY)
    click.echo("deleted")


@main.command()
@click.pass_obj
def ping(ctx: Context) -> None:
    """PONG when the endpoint answers."""
    if not _call(ctx, lambda client: client.ping()):
        raise Failed(f"{ctx.endpoint} answered, but not PONG")
    click.echo("PONG")


@main.command()
@click.option("--json", "as_json", is_flag=True, help="the whole answer as JSON")
@click.pass_obj
def stats(ctx: Context, as_json: bool) -> None:
    """The cluster as the router sees it: one line per node."""
    answer = _call(ctx, lambda client: client.stats())
    if as_json:
        click.echo(json.dumps(answer, indent=2, sort_keys=True, default=repr))
        return
    for line in stats_table(answer):
        click.echo(line)


def stats_table(answer: dict) -> list[str]:
    """Partitions, nodes, roles, liveness, keys and lag, aligned; a node's own stats when the
    endpoint is a node."""
    if "partitions" not in answer:  # a node
        return [f"{name}: {answer[name]}" for name in ("role", "keys_estimate", "sequence",
                                                         "segments", "uptime_s") if name in answer]
    rows = [("partition", "node", "role", "up", "keys", "lag", "refused")]
    for partition in answer["partitions"]:
        refused = lambda fields: sum((fields.get("refused") or {}).values()) or ""
        rows.append((str(partition["index"]), partition["master"], "master",
                     "yes" if partition["alive"] else "DOWN", _shown(partition.get("keys")), "",
                     str(refused(partition))))
        for slave in partition.get("slaves", []):
            rows.append(("", slave["address"], "slave", "yes" if slave.get("alive") else "DOWN",
                         _shown(slave.get("keys")), _shown(slave.get("lag")), str(refused(slave))))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip()
             for row in rows]
    requests = answer.get("requests") or {}
    lines.append(f"requests through the router: {sum(requests.values())}; "
                 f"uptime {answer.get('uptime_s', 0):.0f} s")
    return lines


def _shown(value: object) -> str:
    return "?" if value is None else str(value)


@main.command()
@click.option("-c", "--clients", default=4, help="clients at once (threads, a connection each)")
@click.option("-n", "--requests", default=10_000, help="operations per test, split among clients")
@click.option("-d", "--data-size", default=100, help="value size in bytes")
@click.option("-P", "--batch", default=1, help="keys per call: above 1, mset and mget")
@click.option("-w", "w", default="1", help="write concern of the sets")
@click.option("-t", "--tests", default="set,get", help="which tests, in order: set, get")
@click.pass_obj
def bench(ctx: Context, clients: int, requests: int, data_size: int, batch: int, w: str,
          tests: str) -> None:
    """Time sets and gets like redis-benchmark: ops/s and the latency of each call."""
    unknown = set(tests.split(",")) - {"set", "get"}
    if unknown:
        raise Failed(f"bench: -t takes set and get, not {', '.join(sorted(unknown))}")
    if min(clients, requests, batch) < 1 or data_size < 0:
        raise Failed("bench: -c, -n and -P are at least 1, -d at least 0")
    if batch > 1 and ctx.url is not None:
        raise Failed("bench: -P above 1 (mset, mget) needs the native --endpoint; the HTTP "
                     "edge has no batch calls")
    concern = _concern(w)
    value = b"x" * data_size
    calls = max(1, requests // batch)
    shares = [calls // clients + (i < calls % clients) for i in range(clients)]
    for test in tests.split(","):
        def work(index: int, latencies: list) -> None:
            first = sum(shares[:index])
            with ctx.new_client() as client:
                for call in range(first, first + shares[index]):
                    keys = [b"bench:%d" % (call * batch + j) for j in range(batch)]
                    started = time.perf_counter()
                    if test == "set":
                        if batch == 1:
                            client.set(keys[0], value, w=concern)
                        else:
                            client.mset({key: value for key in keys}, w=concern)
                    elif batch == 1:
                        client.get(keys[0])
                    else:
                        client.mget(keys)
                    latencies.append(time.perf_counter() - started)
        click.echo(_bench_line(test, batch, clients, *_run_clients(work, clients)))


def _run_clients(work, clients: int) -> tuple[list, float, list]:
    """Run work(i, latencies) in `clients` threads; (latencies, seconds, errors)."""
    latencies: list = [[] for _ in range(clients)]
    errors: list = []

    def guarded(index: int) -> None:
        try:
            work(index, latencies[index])
        except YaddbError as exc:
            errors.append(exc)
    threads = [threading.Thread(target=guarded, args=(i,)) for i in range(clients)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return [x for part in latencies for x in part], time.perf_counter() - started, errors


def _bench_line(test: str, batch: int, clients: int, latencies: list, seconds: float,
                errors: list) -> str:
    if errors:
        raise Failed(f"bench {test}: {errors[0]} ({len(errors)} of {clients} clients failed)")
    ordered = sorted(latencies)

    def ms(fraction: float) -> str:
        return f"{ordered[min(len(ordered) - 1, int(fraction * len(ordered)))] * 1000:.3f}"
    name = test.upper() if batch == 1 else f"M{test.upper()} of {batch}"
    return (f"{name}: {len(ordered) * batch / seconds:,.0f} ops/s ({len(ordered)} calls, "
            f"{clients} clients, {seconds:.2f} s); latency ms p50 {ms(0.5)} p99 {ms(0.99)} "
            f"p99.9 {ms(0.999)}")


@main.command()
@click.argument("directory", type=click.Path(file_okay=False))
@click.option("--clients", default=1, help="client pairs to make")
def keygen(directory: str, clients: int) -> None:
    """Make a cluster's CURVE keys in DIRECTORY: one member pair (every node and router) and
    client pairs; secret files are 0600 and existing keys are never replaced."""
    from yaddb.transport.keys import make_keys
    try:
        written = make_keys(directory, clients)
    except YaddbError as exc:
        raise Failed(str(exc)) from None
    for path in written:
        click.echo(path)
    click.echo("Give every node and router --keys-dir with member.key and member.key_secret; "
               "give each client machine member.key and its own client-N.key and "
               "client-N.key_secret.", err=True)
