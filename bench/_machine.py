"""What the machine is doing, shared by the benchmarks."""

from __future__ import annotations

import os


def system_busy_seconds() -> float:
    """CPU seconds all processes of the machine have used since boot (Linux; else 0)."""
    try:
        with open("/proc/stat") as fh:
            fields = [int(v) for v in fh.readline().split()[1:]]
    except (OSError, ValueError):
        return 0.0
    user, nice, system, _idle, _iowait, irq, softirq = fields[:7]
    return (user + nice + system + irq + softirq) / os.sysconf("SC_CLK_TCK")
