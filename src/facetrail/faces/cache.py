"""Files facetrail derives from the installed models, kept under ``<home>/models``."""

from __future__ import annotations

import contextlib
import hashlib
import os
import threading
from collections.abc import Callable
from pathlib import Path


def write_atomically(target: Path, write: Callable[[Path], object]) -> Path:
    """Have ``write`` fill a temporary file next to ``target``, then rename it to ``target``.

    Processes, or threads of one, may write the same file at once: each writes its own
    temporary file, and a reader only ever sees a missing or a complete ``target``.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f".{target.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    write(partial)
    partial.replace(target)
    return target


def derived_graph(directory: Path | None, name: str, derive: Callable[[], bytes]) -> bytes:
    """The bytes of a graph derived from a shipped one, kept as ``directory/name`` with its
    sha256 beside it (``name.sha256``); derived and kept on first use, or whenever the copy
    does not match its digest. Without a writable ``directory``, derived in memory each time.

    ``name`` must identify the source file (its sha256) and the derivation's version, so that a
    new model or a new derivation never reads an old copy. Deriving imports ``onnx`` (about a
    second of CPU per process); reading a kept copy does not, which is what makes worker start-up
    and a CLI search cheap."""
    if directory is not None:
        path, digest = directory / name, directory / f"{name}.sha256"
        with contextlib.suppress(OSError, ValueError):
            data = path.read_bytes()
            if hashlib.sha256(data).hexdigest() == digest.read_text().strip():
                return data
    data = derive()
    if directory is not None:
        # If the data directory cannot be written, the next process derives it again.
        with contextlib.suppress(OSError):
            write_atomically(path, lambda p: p.write_bytes(data))
            write_atomically(digest, lambda p: p.write_text(hashlib.sha256(data).hexdigest()))
    return data
