"""YADDB: a distributed key-value database."""
from yaddb.errors import YaddbError

__all__ = ["YaddbError"]
