"""The OpenAPI description of the HTTP edge, served at GET /openapi.json."""
from __future__ import annotations

import json

__all__ = ["DOCUMENT"]

DOCUMENT = json.dumps({"openapi": "3.0.3", "info": {"title": "YADDB HTTP edge", "version": "0"},
                       "paths": {}}).encode()
