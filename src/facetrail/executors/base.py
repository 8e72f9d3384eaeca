"""The executor protocol: where ingest and reembed run their tasks.

An executor runs tasks on workers and gives back each task's result, or the exception the
task raised. Each worker holds what a ``Worker`` recipe starts in it once (a face model, for
image analysis). Tasks, results and recipes are picklable frozen dataclasses, so an executor
may run them in other processes or on other machines.

A worker that dies while it runs a task (killed, out of memory, a crash in native code) is
reported as ``WorkerLost`` by ``result`` (or by ``submit``); the executor is then unusable and
is closed. Which of the tasks in flight killed it is not known: ``dispatch.Dispatch`` finds
out, once for every executor.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import Protocol, TypeVar

T = TypeVar("T", contravariant=True)
R = TypeVar("R", covariant=True)


@dataclass(frozen=True)
class Handle:
    """A submitted task, as the executor that took it numbers it."""

    number: int


class Worker(Protocol[T, R]):
    """A picklable recipe for what each worker holds."""

    def start(self) -> Callable[[T], R]:
        """Called once in each worker; returns the function every task of that worker is run
        with (its result goes back to the caller)."""
        ...


class Executor(Protocol[T, R]):
    @property
    def slots(self) -> int:
        """How many tasks to keep in flight: enough to keep every worker busy."""
        ...

    def submit(self, task: T) -> Handle:
        """Start ``task`` (or queue it); raises ``WorkerLost`` if a worker died already."""
        ...

    def wait(self, handles: Collection[Handle], timeout: float | None = None) -> set[Handle]:
        """Block until at least one of ``handles`` has completed (or ``timeout`` seconds have
        passed); return the completed ones. Never raises ``WorkerLost``."""
        ...

    def result(self, handle: Handle) -> R:
        """The result of a completed task, or the exception it raised, raised again;
        ``WorkerLost`` if its worker died. The executor forgets the handle."""
        ...

    def close(self, cancel: bool = False) -> None:
        """Stop the workers, after the tasks in flight have finished; with ``cancel``, at
        once: tasks in flight are abandoned, without waiting for any."""
        ...
