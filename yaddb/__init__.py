"""YADDB: a distributed key-value database.

    from yaddb import Client, key_for, YaddbError

The names are loaded on first use (PEP 562), so importing the storage engine or one of its
worker processes (`python -m yaddb.lsm.workerd`) never loads ZeroMQ, Bottle or the router.
"""
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__all__ = ["Client", "Item", "YaddbError", "key_for"]

_HOMES = {"Client": "yaddb.client", "Item": "yaddb.item", "key_for": "yaddb.item",
          "YaddbError": "yaddb.errors"}

if TYPE_CHECKING:  # for type checkers and editors; at run time __getattr__ loads them
    from yaddb.client import Client
    from yaddb.errors import YaddbError
    from yaddb.item import Item, key_for


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'yaddb' has no attribute {name!r}")
    value = getattr(importlib.import_module(home), name)
    globals()[name] = value  # once loaded, a plain module attribute
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
