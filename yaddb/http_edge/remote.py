"""A client of the HTTP edge (CONTRACT.md section 4), for `yaddb --url`: the calls of
yaddb.Client that the command uses, over HTTP with the standard library.

Keys travel as hex, values as UTF-8 or base64 (`value_encoding`), as the edge's JSON has them.
An error reply becomes the YaddbError its status means, carrying the edge's message.
"""
from __future__ import annotations

import base64
import json
import urllib.error
import urllib.request
from typing import Any, Optional, Union

from yaddb.errors import (BadRequest, NotMaster, Unavailable, ValueTooLarge, YaddbError,
                          YaddbTimeout)
from yaddb.item import Item, key_for

ERROR_OF_STATUS = {400: BadRequest, 404: BadRequest, 413: ValueTooLarge, 418: NotMaster,
                   503: Unavailable}


class EdgeClient:
    """`EdgeClient("http://127.0.0.1:8080", timeout, token)`: get, set, delete, ping, stats."""

    def __init__(self, url: str, timeout: float = 2.0, token: Optional[str] = None) -> None:
        self.url = url.rstrip("/")
        self.timeout = timeout
        self._headers = {"Authorization": f"Bearer {token}"} if token else {}

    def get(self, key: bytes) -> Optional[Item]:
        status, answer = self._call("POST", "/query", key.hex().encode(), "text/plain", found=True)
        if status == 404:
            return None
        item = answer[key.hex()]
        value = item["value"].encode("utf-8") if item.get("value_encoding") != "base64" \
            else base64.b64decode(item["value"])
        return Item(item["content_type"], item["encoding"], value)

    def set(self, key: Optional[bytes], value: Union[bytes, str], content_type: Optional[str] = None,
            encoding: Optional[str] = None, w: Union[int, str] = 1) -> bytes:
        raw = value.encode("utf-8") if isinstance(value, str) else bytes(value)
        text = isinstance(value, str)
        key = key_for(raw) if key is None else key
        doc = {"key": key.hex(),
               "content_type": content_type or ("text/plain" if text else "application/octet-stream"),
               "encoding": encoding or ("utf-8" if text else "binary"),
               "value": base64.b64encode(raw).decode("ascii"), "value_encoding": "base64"}
        self._call("PUT", f"/set?w={w}", json.dumps(doc).encode(), "application/json")
        return key

    def delete(self, key: bytes, w: Union[int, str] = 1) -> bool:
        status, _ = self._call("DELETE", f"/delete?w={w}", key.hex().encode(), "text/plain",
                               found=True)
        return status == 200

    def ping(self) -> bool:
        return self._call("GET", "/ping")[1] == "PONG"

    def stats(self) -> dict:
        return self._call("GET", "/stats")[1]

    def close(self) -> None:
        """Nothing to close: every call is its own connection."""

    def __enter__(self) -> "EdgeClient":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def _call(self, method: str, path: str, body: Optional[bytes] = None,
              content_type: Optional[str] = None, found: bool = False) -> tuple[int, Any]:
        """(status, decoded JSON or text); 404 comes back as is when `found` asks whether."""
        headers = dict(self._headers)
        if content_type:
            headers["Content-Type"] = content_type
        request = urllib.request.Request(self.url + path, data=body, method=method, headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as reply:
                return reply.status, _decode(reply.read(), reply.headers.get_content_type())
        except urllib.error.HTTPError as exc:
            if found and exc.code == 404:
                return 404, None
            message = _decode(exc.read(), exc.headers.get_content_type())
            if isinstance(message, dict):
                message = message.get("error", message)
            raise ERROR_OF_STATUS.get(exc.code, YaddbError)(
                f"{self.url} answered {exc.code}: {message}") from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            error = YaddbTimeout if "timed out" in str(reason) else Unavailable
            raise error(f"cannot reach the HTTP edge at {self.url}: {reason}") from None


def _decode(body: bytes, media: str) -> Any:
    if media == "application/json":
        try:
            return json.loads(body)
        except ValueError:
            pass
    return body.decode("utf-8", "replace").strip()
