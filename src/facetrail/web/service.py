"""What the HTTP layer holds for its lifetime: the engine, the rate limits, the job runner,
the scheduled retention sweep.

Requests run on uvicorn's thread pool and share one engine, with no lock around it: searches,
probe uploads and the job runner's ingests and index syncs run at the same time.

- The face models run concurrently: an ONNX Runtime session's ``run`` is thread-safe, each
  model loads once per process (under its own lock, on first use), and dlib's detectors,
  which keep per-call state, take their own lock (``faces/dlib_backend.py``).
- The store gives every thread its own connection; the database orders writes.
- The engine opens the vector index once, however many threads first ask for it.
- ``VectorIndex.search`` is assumed safe while the same index is synced, added to, removed
  from or optimised by another thread (the job runner): the index guarantees it, swapping or
  extending its structures without making searches wait.
"""

from __future__ import annotations

import time

from facetrail.accounts import Actor
from facetrail.engine import Facetrail
from facetrail.errors import InputError, RateLimitError
from facetrail.settings import Settings
from facetrail.store import ProbeRow, SearchRow, Store
from facetrail.web.denials import DenialLog, LoginThrottle
from facetrail.web.jobs import JobRunner
from facetrail.web.sweeper import Sweeper


class Service:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.engine = Facetrail(settings)
        store = self.engine.store
        self.rate = RateLimiter(store, "search", settings.search_rate,
                                settings.search_rate_window)
        # Finding faces in a probe costs about what a search does: the same rate, its own count,
        # so that the web app's two steps (upload, then search) are still one search.
        self.probe_rate = RateLimiter(store, "probe", settings.search_rate,
                                      settings.search_rate_window, "probe uploads")
        self.logins = LoginThrottle(store, settings.login_failures,
                                    settings.login_failure_window)
        self.denials = DenialLog(self.engine.store)
        self.jobs = JobRunner(self)
        self.sweeper = Sweeper(self.engine)

    def start(self) -> None:
        self.jobs.start()
        self.sweeper.start()

    def search(
        self, actor: Actor, face: int, *, case_ref: str, purpose: str,
        probe_sha256: str | None = None, upload: bytes | None = None,
        top: int | None = None, threshold: float | None = None, history: bool = False,
    ) -> SearchRow:
        """Search one face of a stored probe, or of ``upload`` kept as a probe first, counted
        against the user's search rate."""
        self.rate.check(actor.name)
        probe = upload if upload is not None else probe_sha256
        if probe is None:
            raise InputError("a search needs a stored probe or an upload")
        return self.engine.search_probes(
            [probe], face=face, case_ref=case_ref, purpose=purpose, top=top,
            threshold=threshold, actor=actor, history=history,
        ).record

    def keep_probe(self, data: bytes, actor: Actor) -> ProbeRow:
        """Keep an uploaded probe and find its faces, counted against the user's probe upload
        rate."""
        self.probe_rate.check(actor.name)
        return self.engine.keep_probe(data, actor=actor)

    def stop(self) -> None:
        self.sweeper.stop()
        self.jobs.stop()
        self.engine.close()


class RateLimiter:
    """At most ``limit`` events per user in any ``window`` seconds (a sliding window), counted
    in the store: every server process of the deployment counts together."""

    def __init__(self, store: Store, kind: str, limit: int, window: float,
                 what: str = "searches") -> None:
        self.store = store
        self.kind = kind
        self.limit = limit
        self.window = window
        self.what = what

    def check(self, who: str) -> None:
        """Count one event for the user, or raise ``RateLimitError`` if over the limit."""
        wait = self.store.take_rate(self.kind, who, self.limit, self.window, time.time())
        if wait is not None:
            raise RateLimitError.after(
                wait, f"more than {self.limit} {self.what} in {self.window:g} s "
                "(FACETRAIL_SEARCH_RATE)")
