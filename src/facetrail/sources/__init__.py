"""Sources: the collections facetrail indexes. One module per kind, one registry."""

from __future__ import annotations

from pathlib import Path

from facetrail.errors import ConfigError
from facetrail.sources.base import Source, SourceItem, never_seen
from facetrail.sources.folder import FolderSource
from facetrail.sources.manifest import MANIFEST_SUFFIXES, ManifestSource
from facetrail.sources.warc import WarcSource, is_archive

KINDS = ("folder", "manifest", "warc")

__all__ = ["KINDS", "Source", "SourceItem", "guess_kind", "make_source", "never_seen"]


def make_source(kind: str) -> Source:
    match kind:
        case "folder":
            return FolderSource()
        case "manifest":
            return ManifestSource()
        case "warc":
            return WarcSource()
        case _:
            raise ConfigError(f"unknown source kind {kind!r}; use one of {', '.join(KINDS)}")


def guess_kind(path: Path) -> str:
    """The source kind a path looks like: archives and manifests by suffix, else a folder."""
    if is_archive(path):
        return "warc"
    if path.is_file() and path.suffix.lower() in MANIFEST_SUFFIXES:
        return "manifest"
    return "folder"
