"""Executors: where ingest and reembed run their tasks (reading, hashing and analysing images).

One protocol (``base.Executor``), one registry (``make_executor``), one contract suite
(tests/test_executor_contract.py, over every name in ``EXECUTORS``). The crash handling that
every executor shares is ``dispatch.Dispatch``.

- ``local``: worker processes on this machine (the default).
- ``ray``: Ray actors, on this machine or on a Ray cluster (needs the ``ray`` extra).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from facetrail.errors import ConfigError
from facetrail.executors.base import Executor, Handle, Worker
from facetrail.executors.dispatch import Dispatch
from facetrail.executors.inprocess import InProcessExecutor
from facetrail.executors.local import LocalExecutor
from facetrail.settings import Settings

EXECUTORS = ("local", "ray")
"""Every executor, by name."""

T = TypeVar("T")
R = TypeVar("R")

__all__ = ["EXECUTORS", "Dispatch", "Executor", "Handle", "Worker", "make_executor"]


def make_executor(name: str, worker: Worker[T, R], workers: int,
                  here: Callable[[T], R] | None = None,
                  settings: Settings | None = None) -> Executor[T, R]:
    """The executor called ``name``, with ``workers`` workers (0: as many as it has cores),
    each holding what ``worker`` starts. ``here``: what ``worker`` starts, already started in
    this process; a local executor of one worker then runs tasks in this process with it.
    ``settings``: where an executor finds its cluster (unset: from the environment)."""
    match name:
        case "local":
            if workers == 1 and here is not None:
                return InProcessExecutor(here)
            return LocalExecutor(worker, workers)
        case "ray":
            from facetrail.executors.ray_executor import RayExecutor

            address = (settings if settings is not None else Settings()).ray_address
            return RayExecutor(worker, workers, address)
        case other:
            raise ConfigError(f"unknown executor {other!r}; use one of {', '.join(EXECUTORS)}")
