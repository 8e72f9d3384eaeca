"""What the HTTP layer holds for its lifetime: the engine, the lock around it, the job runner."""

from __future__ import annotations

import threading

from facetrail.engine import Facetrail
from facetrail.settings import Settings


class Service:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.engine = Facetrail(settings)
        # The vector index is not safe to search while it is being extended, and the analyzer
        # holds one model: searches and index updates take turns.
        self.lock = threading.Lock()

    def start(self) -> None:
        pass

    def stop(self) -> None:
        self.engine.close()
