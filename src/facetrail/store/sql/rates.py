"""Rate events: every server process of a deployment counts searches, probe uploads and failed
logins in one table, so that a limit holds however many processes serve (``web/service.py``,
``web/denials.py``). Counting and adding happen under one lock (the ``Dialect``'s), so two
processes at the limit cannot both pass. Events older than their window are deleted as they
are counted: the table holds at most the events of the current windows."""

from __future__ import annotations

from facetrail.store.sql.core import Conn, SQLCore


class RateTables(SQLCore):
    def take_rate(self, kind: str, key: str, limit: int, window: float, now: float
                  ) -> float | None:
        with self._tx() as db:
            self.dialect.lock_rates(db.raw)
            wait = _wait(db, kind, key, limit, window, now)
            if wait is None:
                db.execute("INSERT INTO rate_events (kind, key, at) VALUES (?,?,?)",
                           (kind, key, now))
            return wait

    def rate_wait(self, kind: str, key: str, limit: int, window: float, now: float
                  ) -> float | None:
        with self._tx() as db:
            self.dialect.lock_rates(db.raw)
            return _wait(db, kind, key, limit, window, now)

    def add_rate_event(self, kind: str, key: str, now: float) -> None:
        with self._tx() as db:
            self.dialect.lock_rates(db.raw)
            db.execute("INSERT INTO rate_events (kind, key, at) VALUES (?,?,?)", (kind, key, now))


def _wait(db: Conn, kind: str, key: str, limit: int, window: float, now: float) -> float | None:
    db.execute("DELETE FROM rate_events WHERE kind=? AND at<=?", (kind, now - window))
    count, oldest = db.execute("SELECT count(*), min(at) FROM rate_events WHERE kind=? AND key=?",
                               (kind, key)).fetchone()
    if int(count) < limit:
        return None
    return max(0.0, float(oldest) + window - now)
