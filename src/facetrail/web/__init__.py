"""HTTP layer: the JSON API under ``/api`` and the server-rendered pages, over the engine."""

from __future__ import annotations

from facetrail.web.app import create_app

__all__ = ["create_app"]
