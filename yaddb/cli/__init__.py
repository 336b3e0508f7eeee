"""The `yaddb` command (and `python3 -m yaddb`): a client and tools, like redis-cli.

Built on click: subcommands, options from YADDB_* variables (shown in --help), and one clear
line on standard error with a non-zero exit for every failure. Values go to standard output
as their bytes, so `yaddb get k > file` keeps binary values intact. The client commands are
here; bench, keygen, backup and restore in tools.py.
"""
from __future__ import annotations

import json
import sys
from typing import Optional

import click

from yaddb.cli import tools
from yaddb.cli.context import (DEFAULT_ENDPOINT, NO_SUCH_KEY, Context, Failed, call, concern_arg,
                               key_arg)

__all__ = ["main"]


@click.group(context_settings={"help_option_names": ["-h", "--help"], "show_default": True,
                             "auto_envvar_prefix": "YADDB"})
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
    """YADDB's command-line client and tools. Keys are text unless --hex is given.

    Every option of a command may also come from YADDB_<COMMAND>_<OPTION>, such as
    YADDB_BENCH_CLIENTS=8 or YADDB_BACKUP_NODE=HOST:PORT."""
    click_ctx.obj = Context(endpoint, keys_dir, timeout, url, http_token)
    click_ctx.call_on_close(click_ctx.obj.close)


@main.command()
@click.argument("key")
@click.option("--hex", "as_hex", is_flag=True, help="KEY is hex")
@click.pass_obj
def get(ctx: Context, key: str, as_hex: bool) -> None:
    """Print a key's value (its bytes, as stored)."""
    item = call(ctx, lambda client: client.get(key_arg(key, as_hex)))
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
    concern = concern_arg(w)
    call(ctx, lambda client: client.set(key_arg(key, as_hex), data, content_type, encoding, w=concern))
    click.echo("OK")


@main.command(name="del")
@click.argument("key")
@click.option("--hex", "as_hex", is_flag=True, help="KEY is hex")
@click.pass_obj
def delete(ctx: Context, key: str, as_hex: bool) -> None:
    """Delete KEY; exit code 1 when there was no such key."""
    if not call(ctx, lambda client: client.delete(key_arg(key, as_hex))):
        click.echo(f"yaddb: no such key: {key}", err=True)
        sys.exit(NO_SUCH_KEY)
    click.echo("deleted")


@main.command()
@click.pass_obj
def ping(ctx: Context) -> None:
    """PONG when the endpoint answers."""
    if not call(ctx, lambda client: client.ping()):
        raise Failed(f"{ctx.endpoint} answered, but not PONG")
    click.echo("PONG")


@main.command()
@click.option("--json", "as_json", is_flag=True, help="the whole answer as JSON")
@click.pass_obj
def stats(ctx: Context, as_json: bool) -> None:
    """The cluster as the router sees it: one line per node."""
    answer = call(ctx, lambda client: client.stats())
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


for _command in (tools.bench, tools.keygen, tools.backup, tools.restore):
    main.add_command(_command)
