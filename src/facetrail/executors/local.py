"""The local executor (``FACETRAIL_EXECUTOR=local``): worker processes on this machine."""

from __future__ import annotations

import itertools
import os
import signal
import threading
import time
from collections.abc import Callable, Collection
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from multiprocessing import get_context
from typing import Any, Generic, TypeVar

from facetrail.errors import WorkerLost
from facetrail.executors.base import Handle, Worker

T = TypeVar("T")
R = TypeVar("R")

# What the recipe started, in a worker process: set once by the pool's initializer, so that
# the worker's models load once per process. It lives only in worker processes.
_started: Callable[[Any], Any] | None = None


def _start(worker: Worker[Any, Any], parent: int | None = None) -> None:
    global _started
    # Ctrl-C in a terminal reaches the whole process group: the driver stops the run and its
    # pool; a worker that raised KeyboardInterrupt too would only print a traceback.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if parent is not None:
        threading.Thread(target=_exit_without, args=(parent,), name="facetrail-parent",
                         daemon=True).start()
    _started = worker.start()


def _exit_without(parent: int) -> None:
    """End this worker once its parent is gone. A parent killed, or ended by a signal while
    its pool was still shutting down (a server stopped during an ingest job), leaves its
    workers waiting for work forever otherwise."""
    while os.getppid() == parent:
        time.sleep(1.0)
    os._exit(0)


def _run(task: Any) -> Any:
    assert _started is not None, "the worker's recipe was not started in this process"
    return _started(task)


class LocalExecutor(Generic[T, R]):
    """``workers`` spawned processes (0: one per core), each running ``worker.start()`` once;
    twice as many tasks in flight, so that a worker never waits for the next one."""

    def __init__(self, worker: Worker[T, R], workers: int = 0) -> None:
        count = workers or os.cpu_count() or 1
        self.slots = 2 * count
        self._pool = ProcessPoolExecutor(
            max_workers=count, mp_context=get_context("spawn"), initializer=_start,
            initargs=(worker, os.getpid()),
        )
        self._futures: dict[Handle, Future[R]] = {}
        self._numbers = itertools.count()

    def submit(self, task: T) -> Handle:
        try:
            future = self._pool.submit(_run, task)
        except BrokenProcessPool as exc:
            raise WorkerLost(_LOST) from exc
        handle = Handle(next(self._numbers))
        self._futures[handle] = future
        return handle

    def wait(self, handles: Collection[Handle], timeout: float | None = None) -> set[Handle]:
        futures = {self._futures[h]: h for h in handles}
        done, _ = wait(futures, timeout=timeout, return_when=FIRST_COMPLETED)
        return {futures[f] for f in done}

    def result(self, handle: Handle) -> R:
        try:
            return self._futures.pop(handle).result()
        except BrokenProcessPool as exc:
            raise WorkerLost(_LOST) from exc

    def close(self, cancel: bool = False) -> None:
        if not cancel:
            self._pool.shutdown(wait=True)
            return
        # The pool stops running tasks only from Python 3.14 on (terminate_workers): end its
        # processes, or a long task would hold up this process's exit. They write nothing.
        processes = list((getattr(self._pool, "_processes", None) or {}).values())
        self._pool.shutdown(wait=False, cancel_futures=True)
        for process in processes:
            process.terminate()
        for process in processes:
            process.join(5)
            if process.is_alive():
                process.kill()
                process.join()
        self._futures.clear()


_LOST = "a worker process died (killed, out of memory, or a crash in native code)"
