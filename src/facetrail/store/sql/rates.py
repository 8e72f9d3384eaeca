"""Rate events: every server process of a deployment counts searches, probe uploads and failed
logins in one table, so that a limit holds however many processes serve (``web/service.py``,
``web/denials.py``). An event is counted and added under a lock of its kind and key (the
``Dialect``'s), so two processes at the limit cannot both pass. Events older than a day are
deleted as new ones are added."""

from __future__ import annotations

from facetrail.store.sql.core import Conn, SQLCore


class RateTables(SQLCore):
    def take_rate(self, kind: str, key: str, limit: int, window: float, now: float
                  ) -> float | None:
        with self._tx() as db:
            self.dialect.lock_rates(db.raw, f"{kind}:{key}")
            _forget(db, kind, now - max(window, WINDOW_KEPT))
            wait = _wait(db, kind, key, limit, window, now)
            if wait is None:
                db.execute("INSERT INTO rate_events (kind, key, at) VALUES (?,?,?)",
                           (kind, key, now))
            return wait

    def rate_wait(self, kind: str, key: str, limit: int, window: float, now: float
                  ) -> float | None:
        # A read, without a lock: every request with a bearer token asks it.
        return _wait(self._db, kind, key, limit, window, now)


WINDOW_KEPT = 24 * 3600.0
"""Events older than this are deleted as new ones are added (no window is longer)."""


def _forget(db: Conn, kind: str, before: float) -> None:
    db.execute("DELETE FROM rate_events WHERE kind=? AND at<=?", (kind, before))


def _wait(db: Conn, kind: str, key: str, limit: int, window: float, now: float) -> float | None:
    count, oldest = db.execute(
        "SELECT count(*), min(at) FROM rate_events WHERE kind=? AND key=? AND at>?",
        (kind, key, now - window)).fetchone()
    if int(count) < limit:
        return None
    return max(0.0, float(oldest) + window - now)
