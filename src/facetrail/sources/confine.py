"""Where a source's items may lie: the one rule every reader of a source's files applies.

A source's *root* is its folder: the uri of a folder source, of a warc source (an archive, or
a folder of them), and the folder that holds a manifest. Everything read for a source lies
inside its root once links are resolved: the paths an ingest (or an ingest job) is given, the
files a folder lists (a link out of it is an ``outside_source`` error, never opened), the
paths a manifest's rows name, the archives in a folder of them, and the bytes read back to
serve an image or a crop. A source cannot be rooted at ``/``, nor in a system folder
(``SYSTEM_ROOTS``): it would put every file of the host in reach of whoever may ingest.
"""

from __future__ import annotations

from pathlib import Path

from facetrail.errors import OutsideSourceError, PolicyError

SYSTEM_ROOTS = ("/etc", "/proc", "/sys", "/dev", "/boot", "/run", "/root")
"""Folders no source may be rooted in or under (and ``/`` itself)."""


def source_root(kind: str, uri: str | Path) -> Path:
    """The folder (or archive) a source of ``kind`` registered at ``uri`` is confined to."""
    path = Path(uri).resolve()
    return path.parent if kind == "manifest" else path


def check_root(root: Path) -> None:
    """Raise ``PolicyError`` if ``root`` is ``/`` or a system folder, or lies in one."""
    root = root.resolve()
    if root == Path(root.anchor):
        raise PolicyError(f"a source cannot be rooted at {root}: it would reach every file of "
                          "the host; register the folder that holds the photos")
    for system in SYSTEM_ROOTS:
        if root.is_relative_to(system):
            raise PolicyError(f"a source cannot be rooted in {system} ({root}): a system "
                              "folder holds no photos to index")


def inside(path: str | Path, root: str | Path) -> bool:
    """Whether ``path``, once every link in it is resolved, lies inside ``root``."""
    return Path(path).resolve().is_relative_to(Path(root).resolve())


def confine(path: str | Path, root: str | Path) -> Path:
    """``path`` resolved, if it lies inside ``root``; else ``OutsideSourceError``."""
    resolved = Path(path).resolve()
    if not resolved.is_relative_to(Path(root).resolve()):
        raise OutsideSourceError(f"{path} lies outside the source's folder {root}"
                                 + (f" (it leads to {resolved})" if str(resolved) != str(path)
                                    else ""))
    return resolved


def check_targets(kind: str, uri: str | Path, targets: list[Path]) -> None:
    """Raise ``PolicyError`` unless every path an ingest of a source is given lies inside the
    source's root (checked when an ingest or a job is asked for, before anything is read)."""
    root = source_root(kind, uri)
    for target in targets:
        if not inside(target, root):
            raise PolicyError(f"{target} is outside the source's folder {root}: an ingest "
                              "reads only what lies inside its source")
