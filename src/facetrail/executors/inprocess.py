"""Tasks run in the calling process, one at a time: a one-worker ingest, which then needs no
worker process and uses the caller's own, already loaded, face model. Not an executor to
choose by name: a task that kills its worker kills the caller, so nothing is isolated."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Collection
from typing import Generic, TypeVar

from facetrail.executors.base import Handle

T = TypeVar("T")
R = TypeVar("R")


class InProcessExecutor(Generic[T, R]):
    slots = 1

    def __init__(self, run: Callable[[T], R]) -> None:
        self._run = run
        self._queued: dict[Handle, T] = {}
        self._results: dict[Handle, R] = {}
        self._errors: dict[Handle, Exception] = {}
        self._numbers = itertools.count()

    def submit(self, task: T) -> Handle:
        handle = Handle(next(self._numbers))
        self._queued[handle] = task
        return handle

    def wait(self, handles: Collection[Handle], timeout: float | None = None) -> set[Handle]:
        done = {h for h in handles if h in self._results or h in self._errors}
        if not done:
            first = next(h for h in handles if h in self._queued)
            self._complete(first)
            done = {first}
        return done

    def result(self, handle: Handle) -> R:
        if handle in self._queued:
            self._complete(handle)
        if handle in self._errors:
            raise self._errors.pop(handle)
        return self._results.pop(handle)

    def close(self, cancel: bool = False) -> None:
        self._queued.clear()

    def _complete(self, handle: Handle) -> None:
        task = self._queued.pop(handle)
        try:
            self._results[handle] = self._run(task)
        except Exception as exc:  # the task's own error, given back by result()
            self._errors[handle] = exc
