"""Stops the processes of a local Ray whose driver was killed: ``python -m
facetrail.executors.ray_watch PID [DIR]``, started by the Ray executor next to the Ray it starts.

A driver killed outright (SIGKILL, out of memory) takes Ray's main processes with it, but some
of Ray's helper processes (its per-node agents) outlive it, orphaned. This watcher notes the
driver's descendants every half second and, once the driver is gone, kills those of them that
are still running, by process id (checking each one's start time, so that a process id reused
since is left alone), then removes Ray's temporary directory DIR. It exits as well when its
own parent, the driver, is gone.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import sys
import time
from pathlib import Path

from facetrail.executors.ray_cluster import descendants

EVERY = 0.5
"""Seconds between two looks at the driver's descendants."""


def started_at(pid: int) -> str | None:
    """The process's start time, in clock ticks since boot (None if it is gone)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def watch(driver: int, temp_dir: str | None = None) -> None:
    me = os.getpid()
    known: dict[int, str] = {}
    while os.getppid() == driver:
        found = {p: s for p in descendants(driver) if p != me and (s := started_at(p))}
        known.update(found)
        known = {p: s for p, s in known.items() if p in found or started_at(p) == s}
        time.sleep(EVERY)
    for pid, start in known.items():
        if started_at(pid) == start:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    if temp_dir is not None:
        shutil.rmtree(temp_dir, ignore_errors=True)


if __name__ == "__main__":
    watch(int(sys.argv[1]), sys.argv[2] if len(sys.argv) > 2 else None)
