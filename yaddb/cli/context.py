"""What every `yaddb` subcommand shares: the connection options opened into a client, and
failures said in one line."""
from __future__ import annotations

from typing import Optional

import click

from yaddb.errors import BadRequest, YaddbError
from yaddb.limits import check_write_concern

DEFAULT_ENDPOINT = "tcp://127.0.0.1:5555"  # the one-command cluster's native front
NO_SUCH_KEY = 1  # exit code of get/del on a missing key: not an error of the command


class Failed(click.ClickException):
    """A failure said in one line: `yaddb: <what>`, exit code 1 (2 for usage, as click)."""

    def show(self, file=None) -> None:
        click.echo(f"yaddb: {self.format_message()}", err=True)


def key_arg(text: str, as_hex: bool) -> bytes:
    if not as_hex:
        return text.encode("utf-8")
    try:
        return bytes.fromhex(text)
    except ValueError:
        raise Failed(f"{text!r} is not hex (pairs of 0-9, a-f)") from None


def concern_arg(w: str):
    """-w checked by the one rule the client and the wire use (limits.check_write_concern),
    before anything is sent: a number of members, majority or all."""
    try:
        return check_write_concern(w)
    except BadRequest as exc:
        raise Failed(f"-w: {exc}") from None


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


def call(ctx: Context, what):
    try:
        return what(ctx.client())
    except YaddbError as exc:
        raise Failed(str(exc)) from None
