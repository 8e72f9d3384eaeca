"""Files facetrail derives from the installed models, kept under ``<home>/models``."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path


def write_atomically(target: Path, write: Callable[[Path], object]) -> Path:
    """Have ``write`` fill a temporary file next to ``target``, then rename it to ``target``.

    Worker processes that start together may build the same file at once: each writes its own
    temporary file, and a reader only ever sees a missing or a complete ``target``.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    write(partial)
    partial.replace(target)
    return target
