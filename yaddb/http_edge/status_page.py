"""The status page served at GET / (CONTRACT section 9): one HTML document polling /stats."""
from __future__ import annotations

__all__ = ["PAGE"]

PAGE = b"<!doctype html><title>YADDB</title><p>status page: work in progress</p>\n"
