"""The router's HTTP edge: WSGI middleware around a Bottle app over `yaddb.Client` (app.py,
routes.py), exceptions to statuses through one table (statuses.py), the waitress server
(server.py) and the /metrics text (metrics.py)."""
from yaddb.http_edge.app import EdgeApp, item_json, make_app
from yaddb.http_edge.server import EdgeServer

__all__ = ["EdgeApp", "EdgeServer", "item_json", "make_app"]
