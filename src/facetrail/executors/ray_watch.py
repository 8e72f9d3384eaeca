"""Stops the processes of a local Ray whose driver was killed: ``python -m
facetrail.executors.ray_watch PID [DIR]``, started by the Ray executor next to the Ray it starts.

A driver killed outright (SIGKILL, out of memory) takes Ray's main processes with it, but some
of Ray's helper processes (its per-node agents, idle workers) outlive it, orphaned. This
watcher notes the driver's descendants every ``EVERY`` seconds and, once the driver is gone,
kills those of them that are still running, by process id (checking each one's start time, so
that a process id reused since is left alone). A process Ray started in the last moments, after
the watcher's last look, is found too: an orphan of the driver's process group, started after
the driver, that is Ray's (titled ``ray::...``, or naming this Ray's temporary directory).
Then it removes Ray's temporary directory DIR. It exits as well when its own parent, the
driver, is gone.
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

EVERY = 0.2
"""Seconds between two looks at the driver's descendants."""
SWEEP_SECONDS = 10.0
"""How long, at most, the watcher keeps looking for orphans once the driver is gone."""


def _stat(pid: int) -> list[str] | None:
    """The fields of /proc/PID/stat after the command name (None if it is gone)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def _group(pid: int) -> int | None:
    fields = _stat(pid)
    return int(fields[2]) if fields else None


def started_at(pid: int) -> str | None:
    """The process's start time, in clock ticks since boot (None if it is gone)."""
    fields = _stat(pid)
    return fields[19] if fields else None


def ray_orphans(group: int, since: int, me: int, temp_dir: str | None) -> dict[int, str]:
    """Processes of the process group ``group`` started at or after ``since`` (clock ticks)
    that are Ray's (their title starts ``ray::``, or their command names this Ray's
    ``temp_dir``), whose parent is gone, or is init, or lies outside the group (a subreaper),
    or is one of them."""
    candidates: dict[int, tuple[int, str]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == me:
            continue
        pid = int(entry.name)
        fields = _stat(pid)
        if not fields or int(fields[2]) != group or int(fields[19]) < since:
            continue
        try:
            command = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if command.startswith(b"ray::") or (temp_dir and temp_dir.encode() in command):
            candidates[pid] = (int(fields[1]), fields[19])
    orphans: dict[int, str] = {}
    grew = True
    while grew:
        grew = False
        for pid, (parent, start) in candidates.items():
            if pid not in orphans and (parent <= 1 or parent in orphans
                                       or started_at(parent) is None
                                       or _group(parent) != group):
                orphans[pid] = start
                grew = True
    return orphans


def watch(driver: int, temp_dir: str | None = None) -> None:
    me = os.getpid()
    group = os.getpgid(driver)
    since = int(started_at(driver) or 0)
    known: dict[int, str] = {}
    while os.getppid() == driver:
        found = {p: s for p in descendants(driver) if p != me and (s := started_at(p))}
        known.update(found)
        known = {p: s for p, s in known.items() if p in found or started_at(p) == s}
        time.sleep(EVERY)
    # Killing one (a raylet) orphans its children: look again until a look finds none.
    deadline = time.monotonic() + SWEEP_SECONDS
    known.update(ray_orphans(group, since, me, temp_dir))
    while known and time.monotonic() < deadline:
        for pid, start in known.items():
            if started_at(pid) == start:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        time.sleep(EVERY)
        known = {p: s for p, s in ray_orphans(group, since, me, temp_dir).items()
                 if started_at(p) == s}
    if temp_dir is not None:
        shutil.rmtree(temp_dir, ignore_errors=True)


if __name__ == "__main__":
    watch(int(sys.argv[1]), sys.argv[2] if len(sys.argv) > 2 else None)
