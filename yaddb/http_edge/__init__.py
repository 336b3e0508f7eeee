"""The router's HTTP edge: a Bottle app over `yaddb.Client` (app.py), its WSGI server
(server.py) and its /metrics text (metrics.py)."""
from yaddb.http_edge.app import EdgeApp, item_json, make_app

__all__ = ["EdgeApp", "EdgeServer", "item_json", "make_app"]


def __getattr__(name):
    # Imported on use, so `python3 -m yaddb.http_edge.server` does not find its own module
    # already imported by the package.
    if name == "EdgeServer":
        from yaddb.http_edge.server import EdgeServer
        return EdgeServer
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
