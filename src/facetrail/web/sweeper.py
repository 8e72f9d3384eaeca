"""The retention sweep on a schedule, inside ``facetrail serve`` (docs/rights.md).

Every ``sweep_minutes`` the server erases what is past its retention, as 'facetrail retention
sweep' does, as the actor ``facetrail-sweep``. When the last sweep ran is kept in the store,
so that several server processes, or a restart, do not sweep more often than that; two
processes that happen to sweep at once erase nothing twice.
"""

from __future__ import annotations

import logging
import threading
from datetime import UTC, datetime, timedelta

from facetrail.accounts import Actor
from facetrail.engine import Facetrail
from facetrail.errors import FacetrailError
from facetrail.rights import iso

LAST_SWEEP = "last_retention_sweep"
"""The store setting holding when the last scheduled sweep started (UTC, ISO 8601)."""
SWEEP_ACTOR = "facetrail-sweep"
log = logging.getLogger("facetrail.sweep")


class Sweeper:
    def __init__(self, engine: Facetrail) -> None:
        self.engine = engine
        self.every = timedelta(minutes=engine.settings.sweep_minutes)
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="facetrail-sweep", daemon=True)

    def start(self) -> None:
        if self.every > timedelta(0):
            self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        if self._thread.is_alive():
            self._thread.join(timeout=120)

    def due(self, now: datetime) -> bool:
        """Whether a sweep is due; a store never swept starts its period now."""
        store = self.engine.store
        last = store.setting(LAST_SWEEP)
        if last is None:
            store.set_setting(LAST_SWEEP, iso(now))
            return False
        return datetime.fromisoformat(last.replace("Z", "+00:00")) + self.every <= now

    def _run(self) -> None:
        wait = min(self.every.total_seconds(), 60.0)
        while not self._stopping.wait(wait):
            now = datetime.now(UTC)
            try:
                if self.due(now):
                    self.engine.store.set_setting(LAST_SWEEP, iso(now))
                    self.engine.sweep(actor=Actor(SWEEP_ACTOR), as_of=now)
            except FacetrailError as exc:  # said, and tried again at the next period
                log.error("retention sweep failed: %s", exc)
