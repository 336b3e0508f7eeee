"""The status page served at GET / (CONTRACT section 9): one HTML document polling /stats.

The page is status_page.html beside this module, plain HTML, CSS and JavaScript with nothing
to build and nothing fetched from elsewhere; it is read once, at import."""
from __future__ import annotations

from importlib.resources import files

__all__ = ["PAGE"]

PAGE: bytes = files(__package__).joinpath("status_page.html").read_bytes()
