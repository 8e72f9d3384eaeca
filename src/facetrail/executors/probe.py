"""A worker for testing executors (tests/test_executor_contract.py): its tasks echo, fail,
sleep or kill the worker running them. Shipped in the package so that any executor's workers,
in whichever process or on whichever machine, can import it."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Probe:
    value: int = 0
    sleep: float = 0.0
    """Seconds to sleep first."""
    fail: str | None = None
    """Raise ``ValueError(fail)``."""
    die: bool = False
    """Kill the worker running it, with SIGKILL (as the kernel's OOM killer does)."""
    die_once: str | None = None
    """A file: kill the worker unless the file exists, after creating it (a task that kills
    its worker the first time only)."""


@dataclass(frozen=True)
class Echo:
    value: int
    pid: int
    """Of the process that ran the task."""


@dataclass(frozen=True)
class ProbeWorker:
    def start(self) -> Callable[[Probe], Echo]:
        return probe


def probe(task: Probe) -> Echo:
    time.sleep(task.sleep)
    if task.fail is not None:
        raise ValueError(task.fail)
    once = Path(task.die_once) if task.die_once else None
    if task.die or (once is not None and not once.exists()):
        if once is not None:
            once.touch()
        os.kill(os.getpid(), signal.SIGKILL)
    return Echo(task.value, os.getpid())
