"""A readers-writer lock for indexes searched by many threads while one thread updates them.

Searches share the lock; a change to the structures a search reads (adding or removing faces,
putting a rebuilt index in use) holds it alone, and only for as long as the change itself
takes. A writer that is waiting holds new readers back, so a steady stream of searches cannot
starve an update: a search waits at most for the searches already running plus that update.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager


class ReadWriteLock:
    def __init__(self) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._readers = 0
        self._writing = False
        self._waiting = 0
        """Writers waiting for the readers to leave."""

    @contextmanager
    def shared(self) -> Iterator[None]:
        """Held with any number of other readers, never with a writer."""
        with self._cond:
            while self._writing or self._waiting:
                self._cond.wait()
            self._readers += 1
        try:
            yield
        finally:
            with self._cond:
                self._readers -= 1
                if not self._readers:
                    self._cond.notify_all()

    @contextmanager
    def exclusive(self) -> Iterator[None]:
        """Held alone: waits for the readers inside to leave and lets no new one in."""
        with self._cond:
            self._waiting += 1
            try:
                while self._writing or self._readers:
                    self._cond.wait()
            finally:
                self._waiting -= 1
            self._writing = True
        try:
            yield
        finally:
            with self._cond:
                self._writing = False
                self._cond.notify_all()
