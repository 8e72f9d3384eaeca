"""Subject access: what facetrail holds about a person, found by photos of them.

Someone asks what is held about them and sends photos of themselves. The largest face of each
photo is embedded with the active face model (``Rights.templates``); the photos are never kept,
not as probes and not in any cache. Every indexed face scoring at least the threshold (default:
the opt-out threshold, ``FACETRAIL_OPTOUT_THRESHOLD``, else the model's floor) against any of
them is reported with:

- a crop of that face only, never its whole image (which may show other people),
- its image: sha256, size, when it was first ingested, and every appearance (source, location,
  URLs, capture time, when it was first recorded, and when a re-ingest found it gone),
- each of those sources' lawful basis, purpose, retention, owner, and whom it is shared with,
- how many searches returned the face as a candidate, and on which days (from the audit log);
  with ``include_cases`` also the case references and purposes of those searches, which may be
  confidential: whoever answers the request decides whether to disclose them.

The report says that these are the faces matching the photos at that threshold, that they may
include look-alikes and miss faces of the person, with the rates measured for the face model
when a calibration holds them. The request is audited (``subject_access``): the reference, the
photos' hashes, the threshold and counts, never a face, a crop or a vector.

The JSON document (``report_json``, schema ``facetrail.subject-access/1``) is what the API
returns and the CLI writes; the HTML report is drawn from it by the web app's templates.
"""

from __future__ import annotations

import base64
import functools
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

import jinja2

from facetrail import imaging, serialize
from facetrail.accounts import Actor
from facetrail.audit import AuditEvent, utc_now
from facetrail.errors import FacetrailError, PolicyError
from facetrail.records import Box
from facetrail.store import AuditQuery, HeldImage
from facetrail.store.base import ShareRow
from facetrail.suppression import shown

if TYPE_CHECKING:
    from facetrail.engine import Facetrail
    from facetrail.rights import Rights

SCHEMA = "facetrail.subject-access/1"


@dataclass(frozen=True)
class SearchHit:
    """A search that returned a face as a candidate. The case and purpose are only filled in
    when they are to be disclosed."""

    audit_id: int
    """The search's audit event (not in the report: it counts searches once each)."""
    at: str
    """UTC time of the search."""
    case_ref: str | None = None
    purpose: str | None = None
    org: str | None = None


@dataclass(frozen=True)
class HeldFace:
    face_id: int
    score: float
    """Against the best-matching photo (higher is more alike)."""
    box: Box
    """(x, y, w, h) in the upright image's pixels."""
    quality: float
    image: HeldImage
    crop: bytes | None
    """A JPEG of this face with a small margin; None if the image could not be read back."""
    crop_problem: str | None
    searches: tuple[SearchHit, ...]


@dataclass(frozen=True)
class SourceTerms:
    """Why and how long a source holds what it holds, and who owns and may search it."""

    name: str
    kind: str
    lawful_basis: str
    purpose: str
    retention_days: int | None
    org: str
    shared_with: tuple[ShareRow, ...]


@dataclass(frozen=True)
class Accuracy:
    """What the face model's measurements say of a match at the report's threshold."""

    measured: bool
    source: str | None
    """What the rates were measured on (the calibration's data)."""
    miss_rate: float | None
    """Of comparisons of two photos of one person, the fraction scoring under the threshold."""
    false_match_rate: float | None
    """Of comparisons of photos of two people, the fraction at or above it (an estimate)."""
    false_match_extrapolated: bool
    expected_lookalikes: float | None
    """About how many faces of other people the photos given may match, over the gallery."""
    gallery_faces: int
    text: str


@dataclass(frozen=True)
class SubjectAccessReport:
    reference: str
    generated_at: str
    actor: str
    photo_sha256s: tuple[str, ...]
    threshold: float
    model: str
    metric: str
    include_cases: bool
    faces: tuple[HeldFace, ...]
    sources: tuple[SourceTerms, ...]
    accuracy: Accuracy
    note: str
    audit_id: int | None = None

    def counts(self) -> dict[str, int]:
        images = {f.image.sha256: f.image for f in self.faces}
        searches = {h.audit_id for f in self.faces for h in f.searches}
        return {
            "faces": len(self.faces), "images": len(images),
            "appearances": sum(len(i.appearances) for i in images.values()),
            "sources": len(self.sources), "searches": len(searches),
        }


class SubjectAccess:
    def __init__(self, engine: Facetrail, rights: Rights) -> None:
        self.engine = engine
        self.rights = rights
        self.store = engine.store

    def run(self, photos: Sequence[bytes], *, reference: str, actor: Actor,
            include_cases: bool = False, threshold: float | None = None
            ) -> SubjectAccessReport:
        self.rights.check(actor)
        reference = reference.strip()
        if not reference:
            raise PolicyError("a subject access request needs its reference (--reference)")
        engine = self.engine
        templates = self.rights.templates(photos)
        strict = self.rights.threshold if threshold is None else threshold
        matches = self.rights.matches(templates, strict)
        rows = self.store.faces([m.face_id for m in matches])
        held = self.store.held_images(sorted({r.image.sha256 for r in rows.values()}),
                                        engine.model_id)
        hits = self._search_hits({m.face_id for m in matches}, include_cases)
        faces: list[HeldFace] = []
        readback: dict[str, bytes | FacetrailError] = {}
        for match in matches:
            row = rows.get(match.face_id)
            if row is None or row.image.sha256 not in held:
                continue  # erased since the index was read
            crop, problem = self._crop(row.image.sha256, row.box, readback)
            faces.append(HeldFace(
                face_id=match.face_id, score=match.score, box=row.box, quality=row.quality,
                image=held[row.image.sha256], crop=crop, crop_problem=problem,
                searches=tuple(hits.get(match.face_id, ()))))
        model = engine.model
        report = SubjectAccessReport(
            reference=reference, generated_at=utc_now(), actor=actor.name,
            photo_sha256s=tuple(imaging.sha256_hex(p) for p in photos), threshold=strict,
            model=model.key, metric=model.metric, include_cases=include_cases,
            faces=tuple(faces), sources=self._sources(faces),
            accuracy=self._accuracy(strict, len(photos)),
            note=note(strict, len(photos), engine.model_name),
        )
        audit_id = self.store.append_audit(AuditEvent(
            actor=actor.name, action="subject_access", org=actor.org,
            details={"reference": reference, "photo_sha256s": list(report.photo_sha256s),
                     "threshold": strict, "model": model.key,
                     "include_cases": include_cases, **report.counts(),
                     "face_ids": [f.face_id for f in faces]}))
        return replace(report, audit_id=audit_id)

    def _crop(self, sha256: str, box: Box, readback: dict[str, bytes | FacetrailError]
              ) -> tuple[bytes | None, str | None]:
        if sha256 not in readback:
            try:
                readback[sha256] = shown(self.store, self.engine.settings, sha256)
            except FacetrailError as exc:
                readback[sha256] = exc
        data = readback[sha256]
        if isinstance(data, FacetrailError):
            return None, f"the image could not be read back where it was found: {data}"
        try:
            return imaging.face_crop(data, box, self.engine.settings), None
        except FacetrailError as exc:
            return None, f"the image could not be decoded: {exc}"

    def _search_hits(self, face_ids: set[int], include_cases: bool
                     ) -> dict[int, list[SearchHit]]:
        """Searches (from the audit log, every organisation's) that returned these faces."""
        hits: dict[int, list[SearchHit]] = {}
        if not face_ids:
            return hits
        for row in self.store.audit_rows(AuditQuery(action="search")):
            e = row.event
            returned = face_ids.intersection(e.details.get("candidate_face_ids", ()))
            for face_id in sorted(returned):
                hits.setdefault(face_id, []).append(
                    SearchHit(row.id, e.at, e.case_ref, e.purpose, e.org) if include_cases
                    else SearchHit(row.id, e.at))
        return hits

    def _sources(self, faces: Sequence[HeldFace]) -> tuple[SourceTerms, ...]:
        names = {a.appearance.source for f in faces for a in f.image.appearances}
        return tuple(
            SourceTerms(s.name, s.kind, s.lawful_basis, s.purpose, s.retention_days, s.org,
                        tuple(self.store.shares(s.id)))
            for s in self.store.list_sources() if s.name in names)

    def _accuracy(self, threshold: float, photos: int) -> Accuracy:
        engine = self.engine
        gallery = engine.index.size
        cal = engine.calibration
        if cal is None:
            return Accuracy(
                measured=False, source=None, miss_rate=None, false_match_rate=None,
                false_match_extrapolated=False, expected_lookalikes=None,
                gallery_faces=gallery,
                text=f"No error rates have been measured for the face model "
                f"{engine.model_name!r} in this deployment ('facetrail calibrate' measures them; "
                "'facetrail eval' reports them but keeps nothing here), so how many look-alikes "
                "the list may hold, and how many faces of the person it may miss, is not known.")
        miss = 1.0 - cal.tar_at(threshold)
        fmr = cal.fmr_at(threshold)
        expected = gallery * fmr.fmr * photos
        estimate = "an extrapolated estimate" if fmr.extrapolated else "an upper estimate"
        text = (
            f"Measured for this face model on {cal.genuine} comparisons of two photos of the "
            f"same person and {cal.impostor} of two different people ({cal.source}): "
            f"{miss:.1%} of same-person comparisons scored under {threshold:g}, so faces of "
            "the person can be missed, more often in small, blurred, turned or covered faces; "
            f"and a face of someone else scores at or above it in about {fmr.fmr:.1e} of "
            f"comparisons ({estimate}), which over the {gallery} faces held makes about "
            f"{expected:.2g} look-alike faces expected for the {photos} photo(s) given. "
            "These rates come from the model's calibration: 'facetrail eval' results are not "
            "kept in the data directory.")
        return Accuracy(
            measured=True, source=cal.source, miss_rate=round(miss, 4),
            false_match_rate=fmr.fmr, false_match_extrapolated=fmr.extrapolated,
            expected_lookalikes=round(expected, 4), gallery_faces=gallery, text=text)


def note(threshold: float, photos: int, model: str) -> str:
    return (
        f"These are the faces held that matched the {photos} photo(s) given, each scoring at "
        f"least {threshold:g} with the face model {model!r} (higher is more alike). A match is "
        "a resemblance, not an identification: the list may include faces of other people who "
        "look alike, and may miss faces of this person (the model's measured error rates are "
        "given with it). The photos given were used for this search only and were not kept.")


# -- the JSON document ---------------------------------------------------------------------------
CropRef = Callable[[HeldFace], str | None]
"""Where a face's crop is found, for the document: a file name, a data URI, or None."""


def data_uri(face: HeldFace) -> str | None:
    if face.crop is None:
        return None
    return "data:image/jpeg;base64," + base64.b64encode(face.crop).decode("ascii")


def crop_file(face: HeldFace) -> str | None:
    """The crop's name in a report directory (``write`` puts it there)."""
    return None if face.crop is None else f"crops/face-{face.face_id}.jpg"


def report_json(report: SubjectAccessReport, crop_ref: CropRef = data_uri) -> dict[str, Any]:
    return {
        "schema": SCHEMA,
        "reference": report.reference,
        "generated_at": report.generated_at,
        "generated_by": report.actor,
        "audit_id": report.audit_id,
        "photo_sha256s": list(report.photo_sha256s),
        "threshold": report.threshold,
        "model": report.model,
        "metric": report.metric,
        "include_cases": report.include_cases,
        "note": report.note,
        "accuracy": {
            "measured": report.accuracy.measured, "source": report.accuracy.source,
            "miss_rate": report.accuracy.miss_rate,
            "false_match_rate": report.accuracy.false_match_rate,
            "false_match_extrapolated": report.accuracy.false_match_extrapolated,
            "expected_lookalikes": report.accuracy.expected_lookalikes,
            "gallery_faces": report.accuracy.gallery_faces, "text": report.accuracy.text,
        },
        "counts": report.counts(),
        "faces": [_face_json(f, crop_ref, report.include_cases) for f in report.faces],
        "sources": [
            {"name": s.name, "kind": s.kind, "lawful_basis": s.lawful_basis,
             "purpose": s.purpose, "retention_days": s.retention_days, "org": s.org,
             "shared_with": [{"org": sh.org, "lawful_basis": sh.lawful_basis,
                              "purpose": sh.purpose, "since": sh.created_at}
                             for sh in s.shared_with]}
            for s in report.sources
        ],
    }


def _face_json(f: HeldFace, crop_ref: CropRef, include_cases: bool) -> dict[str, Any]:
    image = f.image
    searches: dict[str, Any] = {
        "count": len(f.searches), "dates": sorted({h.at[:10] for h in f.searches})}
    if include_cases:
        searches["cases"] = [{"at": h.at, "case_ref": h.case_ref, "purpose": h.purpose,
                              "org": h.org} for h in f.searches]
    return {
        "face_id": f.face_id, "score": f.score, "box": list(f.box), "quality": f.quality,
        "crop": crop_ref(f), "crop_problem": f.crop_problem,
        "image": {"sha256": image.sha256, "bytes": image.bytes, "format": image.format,
                  "width": image.width, "height": image.height,
                  "ingested_at": image.created_at},
        "appearances": [
            {**serialize.appearance(a.appearance), "recorded_at": a.created_at,
             "gone_at": a.gone_at}
            for a in image.appearances
        ],
        "searches": searches,
    }


# -- the HTML report -----------------------------------------------------------------------------
def _package_dir(*parts: str) -> Path:
    return Path(str(resources.files("facetrail").joinpath("web", *parts)))


@functools.cache
def _templates() -> jinja2.Environment:
    return jinja2.Environment(loader=jinja2.FileSystemLoader(_package_dir("templates")),
                              autoescape=True)


def render_html(document: dict[str, Any]) -> str:
    """A whole HTML page of ``document`` (``report_json``) with its styles inline: it loads
    nothing (the crops are data URIs, or files next to it)."""
    css = _package_dir("static", "app.css").read_text(encoding="utf-8")
    return _templates().get_template("subject_access_report.html").render(r=document, css=css)


def write(report: SubjectAccessReport, out: Path) -> Path:
    """``out/index.html`` (crops inline), ``out/report.json`` and the crops as
    ``out/crops/face-ID.jpg`` (which the JSON names). Returns ``out/index.html``."""
    out.mkdir(parents=True, exist_ok=True)
    crops = out / "crops"
    for face in report.faces:
        if face.crop is not None:
            crops.mkdir(exist_ok=True)
            (crops / f"face-{face.face_id}.jpg").write_bytes(face.crop)
    (out / "report.json").write_text(
        json.dumps(report_json(report, crop_file), indent=2, ensure_ascii=False) + "\n",
        encoding="utf-8")
    index = out / "index.html"
    index.write_text(render_html(report_json(report, data_uri)), encoding="utf-8")
    return index
