"""Running a stream of tasks on an executor, and surviving workers that die.

When a worker dies (killed, out of memory, a crash in native code) the task it ran is among
those in flight, and the executor cannot tell which: every task in flight is run again alone,
each on a new executor, so that only a task that kills a worker a second time is given up (its
outcome is ``WorkerLost``); then the stream goes on at full width. Written once, against the
``Executor`` protocol, for ingest and reembed on every executor.

An executor given up is closed (cancelling its tasks) right after its successor starts, not
before: what executors of one kind share in a process (a Ray runtime) then stays up from one
to the next instead of being stopped and started again.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Iterator
from typing import Generic, TypeVar

from facetrail.errors import WorkerLost
from facetrail.executors.base import Executor, Handle

K = TypeVar("K")
T = TypeVar("T")
R = TypeVar("R")


class Dispatch(Generic[K, T, R]):
    """Runs jobs, each a caller's key (never sent anywhere) and a task, on executors made by
    ``start``. Use as a context manager: leaving it closes the executor, cancelling whatever is
    still in flight when an exception leaves it."""

    def __init__(self, start: Callable[[], Executor[T, R]]) -> None:
        self._start = start
        self._executor: Executor[T, R] | None = None
        self._retired: list[Executor[T, R]] = []
        self._queue: deque[tuple[K, T]] = deque()

    def __enter__(self) -> Dispatch[K, T, R]:
        return self

    def __exit__(self, exc_type: object, *_: object) -> None:
        self._close(cancel=exc_type is not None)

    def add(self, key: K, task: T) -> None:
        """Run one more job, before the stream's next (one that follows up an outcome)."""
        self._queue.append((key, task))

    def run(self, jobs: Iterable[tuple[K, T]]) -> Iterator[tuple[K, R | Exception]]:
        """Each job's key and outcome, in the order they complete: the task's result, the
        exception it raised, or ``WorkerLost`` if it killed its worker twice. Jobs are taken
        from ``jobs`` (and ``add``) only as slots free up, so a stream is never held whole."""
        stream = iter(jobs)
        in_flight: dict[Handle, tuple[K, T]] = {}
        while True:
            executor = self._current()
            suspects: list[tuple[K, T]] = []
            while len(in_flight) < executor.slots and (job := self._next(stream)) is not None:
                try:
                    in_flight[executor.submit(job[1])] = job
                except WorkerLost:
                    suspects.append(job)
                    break
            if not in_flight and not suspects:
                return
            if not suspects:
                for handle in executor.wait(in_flight):
                    job = in_flight.pop(handle)
                    try:
                        outcome: R | Exception = executor.result(handle)
                    except WorkerLost:
                        suspects.append(job)
                        continue
                    except Exception as exc:  # the task's own error: its outcome
                        outcome = exc
                    yield job[0], outcome
            if suspects:
                suspects += in_flight.values()
                in_flight.clear()
                yield from self._isolate(suspects)

    def _isolate(self, suspects: list[tuple[K, T]]) -> Iterator[tuple[K, R | Exception]]:
        self._retire()
        for key, task in suspects:
            executor = self._current()
            outcome: R | Exception
            try:
                handle = executor.submit(task)
                executor.wait([handle])
                outcome = executor.result(handle)
            except WorkerLost as lost:
                self._retire()
                outcome = lost
            except Exception as exc:
                outcome = exc
            yield key, outcome

    def _next(self, stream: Iterator[tuple[K, T]]) -> tuple[K, T] | None:
        return self._queue.popleft() if self._queue else next(stream, None)

    def _current(self) -> Executor[T, R]:
        if self._executor is None:
            self._executor = self._start()
            self._close_retired()
        return self._executor

    def _retire(self) -> None:
        """Give up the current executor: it is closed once the next one has started."""
        if self._executor is not None:
            self._retired.append(self._executor)
            self._executor = None

    def _close_retired(self) -> None:
        while self._retired:
            self._retired.pop().close(cancel=True)

    def _close(self, cancel: bool) -> None:
        try:
            if self._executor is not None:
                executor, self._executor = self._executor, None
                executor.close(cancel=cancel)
        finally:
            self._close_retired()
