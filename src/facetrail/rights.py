"""The rights of the people in the photos: erasure, opt-out by face, enforced retention.

Erasure removes a face from everything that holds it (docs/rights.md): the store (then
scrubbed, so no deleted row survives in free pages or the write-ahead log), every index (the
active model's by id, with its re-rank rows zeroed; every other model's that was built, which
catches up with the store), cached thumbnails and crops, and kept search results,
where the candidate becomes a tombstone. The audit event names face ids and hashes, never
pixels or vectors.

An opt-out keeps templates of a person's face (never their photo) and erases every face
that matches one; from then on ingest suppresses matching faces and searches leave them out,
even faces indexed elsewhere before the opt-out existed. Retention erases what a source has
held for longer than its period, probes past theirs, and kept searches past theirs.

These are the deployment's duties as controller: the local operator and admins of the
'default' organisation carry them out.
"""

from __future__ import annotations

import functools
import glob
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

import numpy as np

from facetrail import imaging
from facetrail.accounts import Actor
from facetrail.audit import AuditEvent
from facetrail.errors import (
    ForbiddenError,
    InputError,
    NoFaceError,
    NotFoundError,
    PolicyError,
)
from facetrail.faces.base import ModelInfo, score_of
from facetrail.index import VectorIndex, open_index
from facetrail.orgs import DEFAULT_ORG_ID
from facetrail.records import ImageAnalysis
from facetrail.store import EraseSelector, ErasureScope, OptoutRow
from facetrail.suppression import Suppressor

if TYPE_CHECKING:
    from facetrail.engine import Facetrail

ERASE_KINDS = ("face", "image", "source", "photo", "optout", "retention")
REVIEW_BAND = 0.10
"""Faces scoring this far below the opt-out threshold are shown for review, not erased."""


@dataclass(frozen=True)
class Match:
    face_id: int
    score: float


@dataclass(frozen=True)
class ErasureReport:
    kind: str
    target: str
    reason: str
    dry_run: bool
    faces: tuple[int, ...]
    sha256s: tuple[str, ...]
    counts: dict[str, int]
    erasure_id: int | None = None
    index_removed: int = 0
    files_removed: int = 0
    scrubbed: tuple[str, ...] = ()
    matches: tuple[Match, ...] = ()
    """For an erasure by photo: the faces that matched, with their scores."""
    borderline: tuple[Match, ...] = ()
    """Faces scoring just under the threshold: not erased, to be reviewed."""


@dataclass(frozen=True)
class OptoutReport:
    optout: OptoutRow | None
    """None on a dry run."""
    erasure: ErasureReport


@dataclass(frozen=True)
class SourceExpiry:
    source: str
    retention_days: int | None
    cutoff: str | None
    """Appearances first ingested before this expire; None: no retention set."""
    counts: dict[str, int]


@dataclass(frozen=True)
class SweepReport:
    as_of: str
    dry_run: bool
    sources: tuple[SourceExpiry, ...]
    probes: int
    searches: int
    erasures: tuple[ErasureReport, ...]


def iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


class Rights:
    def __init__(self, engine: Facetrail) -> None:
        self.engine = engine
        self.store = engine.store

    # -- who may ------------------------------------------------------------------------------
    @staticmethod
    def check(actor: Actor) -> None:
        if actor.org_id != DEFAULT_ORG_ID or actor.role not in (None, "admin"):
            raise ForbiddenError("erasure, opt-out, subject access and retention are the "
                              "deployment's duties: an admin of the 'default' organisation, or "
                              "the operator on the command line, carries them out")

    @functools.cached_property
    def suppressor(self) -> Suppressor:
        return Suppressor.of(self.store, self.engine.settings, self.engine.model.metric)

    @property
    def threshold(self) -> float:
        """The opt-out threshold: the setting, or the model's floor (``Suppressor.of``)."""
        return self.suppressor.threshold

    # -- erasure ------------------------------------------------------------------------------
    def erase(self, selector: EraseSelector, *, kind: str, target: str, reason: str,
              actor: Actor, dry_run: bool = False, block_images: bool = False,
              remove_source: int | None = None, matches: Sequence[Match] = (),
              borderline: Sequence[Match] = (), scope: ErasureScope | None = None
              ) -> ErasureReport:
        """Erase what ``selector`` selects (``scope``: what it selects, when the caller has
        already asked the store)."""
        self.check(actor)
        if not reason.strip():
            raise PolicyError("an erasure needs a reason (--reason)")
        scope = scope if scope is not None else self.store.erasure_scope(selector)
        # Images that keep some of their faces: their thumbnails show the erased ones.
        touched = {row.image.sha256 for row in self.store.faces(list(scope.faces)).values()}
        report = ErasureReport(kind=kind, target=target, reason=reason.strip(),
                               dry_run=dry_run, faces=scope.faces,
                               sha256s=scope.sha256s, counts=scope.counts(),
                               matches=tuple(matches), borderline=tuple(borderline))
        if dry_run:
            return report
        if scope.empty and remove_source is None:
            self._audit(report, actor)
            return report
        index = self.engine.index  # opened (and caught up) before the faces leave the store
        row = self.store.erase(scope, kind=kind, target=target, reason=reason.strip(),
                               actor=actor.name, block_images=block_images,
                               remove_source=remove_source)
        removed = self._remove_from_indexes(index, scope)
        files = self._remove_files(scope, touched | set(scope.sha256s))
        scrubbed = tuple(self.store.scrub())
        report = replace(report, erasure_id=row.id, index_removed=removed,
                         files_removed=files, scrubbed=scrubbed)
        self._audit(report, actor)
        return report

    def _remove_from_indexes(self, index: VectorIndex, scope: ErasureScope) -> int:
        if not scope.faces:
            return 0
        ids = np.asarray(scope.faces, dtype=np.int64)
        removed = index.remove(ids)
        # Another model's index, where one was built, catches up with the store when opened:
        # the faces erased from the store leave it, whatever its back end.
        engine = self.engine
        for model_id, key, info in self.store.models():
            slug = re.sub(r"[^A-Za-z0-9_.-]+", "_", key)
            if model_id == engine.model_id or not any(
                    (engine.home / "index").glob(f"{glob.escape(slug)}.*")):
                continue
            other = open_index(engine.settings, self.store, ModelInfo(**json.loads(info)),
                               model_id)
            try:
                other.remove(ids)
            finally:
                other.close()
        return removed

    def _remove_files(self, scope: ErasureScope, shas: set[str]) -> int:
        cache = self.engine.home / "cache"
        thumbs, crops = cache / "thumbs", cache / "crops"
        # Every kept view of an image a face was erased from (the faces left in it too: their
        # crops' margins may show it), and every crop of an erased face.
        kept = [thumbs.glob(f"{sha}*.jpg") for sha in shas]
        kept += [crops.glob(f"*-{sha[:16]}*.jpg") for sha in shas]
        kept += [crops.glob(f"{face_id}-*.jpg") for face_id in scope.faces]
        paths = {p for found in kept for p in found}
        for path in paths:
            path.unlink(missing_ok=True)
        return len(paths)

    def _audit(self, report: ErasureReport, actor: Actor) -> None:
        self.store.append_audit(AuditEvent(
            actor=actor.name, action="erase", org=actor.org,
            details={"kind": report.kind, "target": report.target, "reason": report.reason,
                     "erasure_id": report.erasure_id, **report.counts,
                     "face_ids": list(report.faces), "image_sha256s": list(report.sha256s),
                     "index_removed": report.index_removed,
                     "files_removed": report.files_removed}))

    def erase_face(self, face_ids: Sequence[int], *, reason: str, actor: Actor,
                   dry_run: bool = False) -> ErasureReport:
        target = ",".join(str(i) for i in face_ids)
        return self.erase(EraseSelector(face_ids=tuple(face_ids)), kind="face", target=target,
                          reason=reason, actor=actor, dry_run=dry_run)

    def erase_image(self, sha256: str, *, reason: str, actor: Actor,
                    dry_run: bool = False) -> ErasureReport:
        sha = sha256.strip().lower()
        if len(sha) != 64 or any(c not in "0123456789abcdef" for c in sha):
            raise InputError(f"{sha256!r} is not a sha256 (64 hexadecimal digits)")
        selector = EraseSelector(sha256s=(sha,))
        scope = self.store.erasure_scope(selector)
        if not scope.images and not self.store.image_appearances(sha):
            raise NotFoundError(f"no image with sha256 {sha} in the store")
        return self.erase(selector, kind="image", target=sha, reason=reason, actor=actor,
                          dry_run=dry_run, block_images=True, scope=scope)

    def remove_source(self, name: str, *, reason: str, actor: Actor,
                      dry_run: bool = False) -> ErasureReport:
        source = self.store.get_source(name)
        return self.erase(EraseSelector(source_id=source.id), kind="source", target=name,
                          reason=reason, actor=actor, dry_run=dry_run,
                          remove_source=None if dry_run else source.id)

    def erase_photos(self, photos: Sequence[bytes], *, reason: str, actor: Actor,
                     threshold: float | None = None, dry_run: bool = False,
                     kind: str = "photo", target: str | None = None) -> ErasureReport:
        """Erase every face that matches the person in ``photos`` (their largest face each)."""
        templates = self.templates(photos)
        strict = self.threshold if threshold is None else threshold
        found = self.matches(templates, strict - REVIEW_BAND)
        matches = [m for m in found if m.score >= strict]
        borderline = [m for m in found if m.score < strict]
        shas = ",".join(imaging.sha256_hex(p)[:16] for p in photos)
        return self.erase(EraseSelector(face_ids=tuple(m.face_id for m in matches)),
                          kind=kind, target=target or shas, reason=reason, actor=actor,
                          dry_run=dry_run, matches=matches, borderline=borderline)

    # -- matching a person ----------------------------------------------------------------------
    def templates(self, photos: Sequence[bytes]) -> np.ndarray:
        """The embedding of the largest face of each photo, with the active model."""
        if not photos:
            raise InputError("give at least one photo of the person")
        vectors = []
        for i, data in enumerate(photos):
            analysis = self.engine.analyzer(data, imaging.sha256_hex(data), embed=(0,))
            if not analysis.faces:
                raise NoFaceError(f"no face was found in photo {i + 1}; send a clearer one")
            vectors.append(analysis.faces[0].embedding)
        return np.stack(vectors).astype(np.float32)

    def matches(self, templates: np.ndarray, threshold: float) -> list[Match]:
        """Every indexed face scoring at least ``threshold`` against any template, best
        first (the index is asked for more neighbours until one falls under it)."""
        index = self.engine.index
        if index.size == 0 and self.store.face_count(self.engine.model_id)[0]:
            index.sync()
        best: dict[int, float] = {}
        metric = self.engine.model.metric
        for query in templates:
            k = min(64, max(index.size, 1))
            while True:
                distances, ids = index.search(query[None, :], k)
                scores = np.asarray(score_of(distances[0], metric))
                for face_id, score in zip(ids[0], scores, strict=True):
                    if face_id >= 0 and score >= threshold:
                        best[int(face_id)] = max(best.get(int(face_id), -2.0), float(score))
                if len(ids[0]) < k or k >= index.size or scores[-1] < threshold:
                    break
                k *= 4
        return [Match(i, round(s, 4)) for i, s in sorted(best.items(), key=lambda x: -x[1])]

    # -- opt-out --------------------------------------------------------------------------------
    def add_optout(self, photos: Sequence[bytes], *, reference: str, note: str, actor: Actor,
                   dry_run: bool = False) -> OptoutReport:
        self.check(actor)
        if not reference.strip():
            raise PolicyError("an opt-out needs the request's reference (--reference)")
        templates = self.templates(photos)
        erasure = self.erase_photos(photos, reason=f"opt-out {reference.strip()}", actor=actor,
                                    dry_run=dry_run, kind="optout", target=reference.strip())
        if dry_run:
            return OptoutReport(None, erasure)
        shas = [imaging.sha256_hex(p) for p in photos]
        row = self.store.add_optout(
            reference.strip(), note.strip(), len(photos), actor.name, actor.org_id,
            [(self.engine.model_id, sha, v) for sha, v in zip(shas, templates, strict=True)])
        self.store.append_audit(AuditEvent(
            actor=actor.name, action="optout.add", org=actor.org,
            details={"reference": row.reference, "photos": row.photos,
                     "photo_sha256s": shas, "erasure_id": erasure.erasure_id,
                     "faces_erased": len(erasure.faces),
                     "borderline": len(erasure.borderline)}))
        return OptoutReport(row, erasure)

    def optouts(self, actor: Actor) -> list[OptoutRow]:
        self.check(actor)
        return self.store.optouts()

    def remove_optout(self, reference: str, *, actor: Actor) -> OptoutRow:
        self.check(actor)
        row = self.store.remove_optout(reference)
        self.store.scrub()
        self.store.append_audit(AuditEvent(
            actor=actor.name, action="optout.remove", org=actor.org,
            details={"reference": row.reference, "templates": row.templates}))
        return row

    def uncovered_optouts(self, model_id: int) -> list[str]:
        """References of opt-outs with no template for ``model_id``."""
        covered = set(self.store.optout_templates(model_id)[0])
        return [o.reference for o in self.store.optouts() if o.reference not in covered]

    def opted_out(self, face_ids: Sequence[int]) -> set[int]:
        """Which of ``face_ids`` match an opt-out template of the active model."""
        return self.suppressor.opted_out(face_ids, self.engine.model_id)

    def suppress(self, analysis: ImageAnalysis, model_id: int) -> tuple[ImageAnalysis, int]:
        """``analysis`` without the faces that must not be stored (``suppression``)."""
        return self.suppressor.suppress(analysis, model_id)

    # -- retention ------------------------------------------------------------------------------
    def sweep(self, *, actor: Actor, as_of: datetime | None = None,
              dry_run: bool = False) -> SweepReport:
        self.check(actor)
        now = as_of or datetime.now(UTC)
        settings = self.engine.settings
        expiries: list[SourceExpiry] = []
        erasures: list[ErasureReport] = []
        for source in self.store.list_sources():
            if source.retention_days is None:
                expiries.append(SourceExpiry(source.name, None, None, {}))
                continue
            cutoff = iso(now - timedelta(days=source.retention_days))
            selector = EraseSelector(source_id=source.id, created_before=cutoff)
            scope = self.store.erasure_scope(selector)
            due = bool(scope.counts()["appearances"])
            report = self.erase(selector, kind="retention", target=source.name,
                                reason=f"retention of {source.retention_days} days",
                                actor=actor, dry_run=dry_run or not due, scope=scope)
            if due and not dry_run:
                erasures.append(report)
            expiries.append(SourceExpiry(source.name, source.retention_days, cutoff,
                                         report.counts))
        probe_cutoff = iso(now - timedelta(days=settings.probe_retention_days))
        search_cutoff = iso(now - timedelta(days=settings.search_retention_days))
        searches = self.store.expiring_searches(search_cutoff)
        if dry_run:
            probes = self.store.expiring_probes(probe_cutoff)
            n_probes = len(probes)
        else:
            n_probes = self._expire_probes(probe_cutoff)
            if searches:
                self.store.delete_searches(searches)
            if n_probes or searches:
                self.store.scrub()
        swept = SweepReport(iso(now), dry_run, tuple(expiries), n_probes, len(searches),
                            tuple(erasures))
        self.store.append_audit(AuditEvent(
            actor=actor.name, action="retention.sweep", org=actor.org,
            details={"as_of": swept.as_of, "dry_run": dry_run,
                     "sources": {e.source: e.counts for e in expiries if e.counts},
                     "no_retention": [e.source for e in expiries if e.retention_days is None],
                     "probes": n_probes, "searches": len(searches),
                     "erasure_ids": [e.erasure_id for e in erasures]}))
        return swept

    def _expire_probes(self, cutoff: str) -> int:
        shas = self.store.expire_probes(cutoff)
        home = self.engine.home
        for sha in shas:
            (home / "probes" / sha[:2] / sha).unlink(missing_ok=True)
            crops = home / "cache" / "probe-crops"
            if crops.is_dir():
                for path in crops.glob(f"{sha}-*.jpg"):
                    path.unlink()
        return len(shas)
