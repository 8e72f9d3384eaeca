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


def code_state(repo: str) -> dict[str, str]:
    """The commit checked out in ``repo`` and a digest of its ``src`` tree as it is on disk
    (others edit the tree while benchmarks run: the digest says which code was measured)."""
    import hashlib
    import subprocess
    from pathlib import Path

    try:
        commit = subprocess.run(["git", "-C", repo, "rev-parse", "--short", "HEAD"],
                                capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        commit = "?"
    digest = hashlib.sha256()
    for path in sorted(Path(repo, "src").rglob("*.py")):
        digest.update(str(path.relative_to(repo)).encode() + b"\0" + path.read_bytes())
    return {"commit": commit, "src_sha256": digest.hexdigest()[:12]}
