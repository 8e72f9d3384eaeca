"""Organisations: what each one may see.

One deployment serves many agencies over one collection. Every source is owned by one
organisation and may be shared with others (each sharing under a lawful basis and purpose of
its own). An organisation sees the sources it owns or has been shared, and through them only:

- a search returns faces of images that one of those sources reached, filtered inside the
  index (``allowed`` face ids), so ``top`` candidates are all allowed ones;
- a candidate's appearances are those its sources recorded, never another organisation's;
- a face, an image or a probe it may not see does not exist for it (404, never 403: its
  existence is not disclosed);
- searches, reviews and audit events belong to the organisation they were made for.

The local operator (the command line, who holds the store itself) acts for one organisation,
'default' unless told otherwise.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace

import numpy as np

from facetrail.errors import NotFoundError
from facetrail.records import Appearance, SearchResult
from facetrail.store import SourceRow, Store

DEFAULT_ORG = "default"
DEFAULT_ORG_ID = 1


class Visibility:
    """What organisations may see, read from the store; keeps each organisation's allowed
    face ids until the gallery or its sources change."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self._allowed: dict[tuple[int, int], tuple[object, np.ndarray | None]] = {}

    def source_ids(self, org_id: int) -> list[int]:
        return self.store.visible_source_ids(org_id)

    def sources(self, org_id: int) -> list[SourceRow]:
        ids = set(self.source_ids(org_id))
        return [s for s in self.store.list_sources() if s.id in ids]

    def source_names(self, org_id: int) -> set[str]:
        return {s.name for s in self.sources(org_id)}

    def allowed_faces(self, org_id: int, model_id: int) -> np.ndarray | None:
        """Sorted ids of the faces a search for ``org_id`` may return; None when it may see
        every source (no filter needed)."""
        visible = tuple(self.source_ids(org_id))
        every = len(visible) == len(self.store.list_sources())
        key = (visible, self.store.face_count(model_id))
        cached = self._allowed.get((org_id, model_id))
        if cached is not None and cached[0] == key:
            return cached[1]
        allowed = None if every else self.store.source_face_ids(list(visible), model_id)
        self._allowed[(org_id, model_id)] = (key, allowed)
        return allowed

    def result(self, result: SearchResult, org_id: int) -> SearchResult:
        """``result`` with each candidate's appearances cut to the sources ``org_id`` sees."""
        names = self.source_names(org_id)
        return replace(result, candidates=tuple(
            replace(c, appearances=tuple(a for a in c.appearances if a.source in names))
            for c in result.candidates
        ))

    def appearances(self, appearances: Iterable[Appearance], org_id: int) -> list[Appearance]:
        names = self.source_names(org_id)
        return [a for a in appearances if a.source in names]

    def check_seen(self, appearances: Iterable[Appearance], org_id: int, what: str) -> None:
        """Raise NotFoundError unless one of ``appearances`` is in a source ``org_id`` sees."""
        if not self.appearances(appearances, org_id):
            raise NotFoundError(f"no {what}")

    def check_probe(self, sha256: str, org_id: int) -> None:
        if org_id not in self.store.probe_org_ids(sha256):
            raise NotFoundError(f"no probe with sha256 {sha256}; upload it first")
