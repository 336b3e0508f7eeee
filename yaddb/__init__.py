"""YADDB: a distributed key-value database."""
from yaddb.client import Client
from yaddb.errors import YaddbError
from yaddb.item import Item, key_for

__all__ = ["Client", "Item", "YaddbError", "key_for"]
