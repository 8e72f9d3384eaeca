"""Typed records passed between pipeline stages.

    sources --ImageRecord/ImageRef/SourceFailure--> imaging + faces --ImageAnalysis--> store/index
    search  --Candidate--> SearchResult

Coordinates are pixels of the image *after* its EXIF orientation has been applied. Boxes are
``(x, y, w, h)``: left, top, width, height. Landmarks are five ``(x, y)`` points in dlib's
5-point order: right eye outer, right eye inner, left eye outer, left eye inner, nose base
(right/left as seen from the subject).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

Box = tuple[int, int, int, int]
Point = tuple[float, float]


@dataclass(frozen=True)
class Provenance:
    """Where one copy of an image was found."""

    location: str
    """File path, or ``<archive path>#<byte offset>`` for a record inside a web archive."""
    source_url: str | None = None
    """The URL the image was served from (WARC-Target-URI, or a manifest's ``source_url``)."""
    page_urls: tuple[str, ...] = ()
    """Pages that embed the image (HTML ``img`` src/srcset in the same archive, or manifest)."""
    captured_at: str | None = None
    """ISO 8601 time of capture (WARC-Date, or a manifest's ``captured_at``)."""
    title: str | None = None
    record_id: str | None = None
    """WARC-Record-ID for archive records."""
    listing: str | None = None
    """The manifest or web archive (its resolved path) that listed this copy; None for a file
    found by walking a folder. A re-ingest of a manifest or an archive finds out what it no
    longer lists by this."""


@dataclass(frozen=True)
class ImageRecord:
    """Bytes of one candidate image, with where they came from."""

    provenance: Provenance
    data: bytes
    fingerprint: str | None = None
    """Cheap change marker (size and mtime for files) used to skip unchanged items on re-runs."""


@dataclass(frozen=True)
class Located:
    """Where an image's bytes lie, for whichever process reads them (a worker, on a cluster)."""

    path: str
    """A file: the image itself, or the web archive (``.warc``, ``.warc.gz``, ``.wacz``)
    holding its record."""
    offset: int | None = None
    """Byte offset of the image's record in the archive (or its ``member``); None: the image
    is the whole file."""
    member: str | None = None
    """The WARC inside a WACZ (a zip member) that holds the record."""
    roots: tuple[str, ...] | None = None
    """Read only if ``path`` lies inside one of these once its links are resolved (its
    source's root, ``sources.confine``); None: wherever it is."""


@dataclass(frozen=True)
class ImageRef:
    """One candidate image whose bytes are left where they lie, for a worker to read."""

    provenance: Provenance
    at: Located
    fingerprint: str | None = None
    """As ``ImageRecord.fingerprint``."""
    context: str = ""
    """Put before the reason when the bytes cannot be read (the manifest row naming the file)."""


@dataclass(frozen=True)
class SourceFailure:
    """An item a source could not turn into bytes: a broken archive record, a missing file."""

    location: str
    code: str
    reason: str


@dataclass(frozen=True)
class DetectedFace:
    box: Box
    landmarks: tuple[Point, ...]
    det_score: float
    """The detector's confidence; for HOG, the SVM margin (> 0 means a detection)."""
    quality: float
    """0..1: min(1, face size / 80 px) x min(1, sharpness / 100)."""
    sharpness: float
    """Variance of the Laplacian of the face's grey levels (higher is sharper)."""
    embedding: np.ndarray = field(compare=False, repr=False)
    """float32 vector, as produced by the model (dlib's are not unit length)."""
    runtime: str = field(compare=False)
    """What computed the embedding: 'onnx' (ONNX Runtime) or 'dlib'. Both give the same
    vectors within 1e-4, so the model, and the embedding space, are the same."""

    @property
    def area(self) -> int:
        return self.box[2] * self.box[3]


@dataclass(frozen=True)
class ImageAnalysis:
    """What the face stage found in one decoded image."""

    sha256: str
    width: int
    height: int
    format: str
    faces: tuple[DetectedFace, ...]
    hidden: tuple[Box, ...] = ()
    """Boxes of faces found but left out because they match an opt-out
    (``suppression.Suppressor``): stored as boxes only, painted over wherever the image is
    shown."""


@dataclass(frozen=True)
class ImageInfo:
    sha256: str
    width: int
    height: int


@dataclass(frozen=True)
class Appearance:
    source: str
    location: str
    source_url: str | None
    page_urls: tuple[str, ...]
    captured_at: str | None
    title: str | None = None
    record_id: str | None = None
    gone_at: str | None = None
    """ISO 8601 UTC time a re-ingest found the image no longer there (the file deleted or
    replaced, the manifest row or archive record gone); None: still where it was seen."""

    @property
    def page_url(self) -> str | None:
        return self.page_urls[0] if self.page_urls else None


@dataclass(frozen=True)
class Candidate:
    rank: int
    face_id: int
    score: float
    distance: float
    box: Box
    det_score: float
    quality: float
    image: ImageInfo
    appearances: tuple[Appearance, ...]
    probe_face: int
    """Index of the probe face this candidate answers (see ``ProbeInfo.faces``)."""
    runtime: str
    """What computed the candidate's embedding: 'onnx' or 'dlib' (the same vectors)."""
    fmr: float | None = None
    """Estimated false-match rate of this score (None without a calibration)."""
    fmr_extrapolated: bool = False
    """True when ``fmr`` is beyond what the calibration data resolves (an extrapolation)."""
    expected_false: float | None = None
    """Expected false candidates at this score or above: gallery faces x ``fmr``."""


@dataclass(frozen=True)
class ProbeFace:
    box: Box
    det_score: float
    quality: float


@dataclass(frozen=True)
class ProbeInfo:
    sha256: str
    width: int
    height: int
    faces: tuple[ProbeFace, ...]
    searched_faces: tuple[int, ...]


@dataclass(frozen=True)
class FaceOutcome:
    """What the search of one probe face (or of several photos' faces combined) found."""

    probe_face: int
    candidates: int
    best_below: float | None = None
    """With no candidate: the best score under the threshold of a face the search could have
    returned (None when no such face was near: an empty or fully filtered gallery)."""
    best_below_fmr: float | None = None
    """The calibrated false-match rate of ``best_below`` (None without a calibration)."""
    best_below_extrapolated: bool = False


@dataclass(frozen=True)
class SearchResult:
    probe: ProbeInfo
    candidates: tuple[Candidate, ...]
    threshold: float
    min_quality: float
    top: int
    model: str
    gallery_faces: int
    audit_id: int
    threshold_rule: str = "fixed"
    """How the threshold was set: 'override' (given), 'fixed' (the setting, no calibration),
    'calibrated' (raised for the gallery size) or 'floor' (the setting, above the calibrated)."""
    calibration: CalibrationNote | None = None
    probes: tuple[ProbeInfo, ...] = ()
    """Every probe photo when several were searched as one person (``probe`` is the first)."""
    fusion: str | None = None
    """How several probe photos were combined ('mean' or 'max'); None for one photo."""
    metric: str = "l2"
    """The model's metric, which says what a score is ('l2' or 'cosine'; docs/scores.md)."""
    outcomes: tuple[FaceOutcome, ...] = ()
    """One per face searched (one for several photos searched as one person)."""


@dataclass(frozen=True)
class CalibrationNote:
    """The calibration a search used, in brief."""

    source: str
    genuine: int
    impostor: int
    resolution: float
    """The lowest FMR the calibration data measures; rates below it are extrapolated."""
    fpir_target: float
    calibrated_threshold: float
    """The threshold at which gallery faces x FMR = fpir_target."""
    expected_false_at_threshold: float
    """Gallery faces x FMR(threshold) for the threshold used."""


@dataclass(frozen=True)
class IngestReport:
    run_id: int
    source: str
    items: int
    images_new: int
    duplicates: int
    """Items whose bytes were already in the store (same sha256), seen again at a location."""
    skipped: int
    """Items already ingested from the same location, unchanged."""
    faces: int
    errors: int
    seconds: float
    suppressed: int = 0
    """Faces left out because they match an opt-out or were erased (and erased images)."""
    gone: int = 0
    """Appearances the run found no longer there (docs/provenance.md)."""


@dataclass(frozen=True)
class IndexInfo:
    """What a vector index is, what it costs and how well it was measured to search, in terms
    every index back end has; what only one engine has (FAISS's nprobe, a server's
    collection) is in ``details``."""

    backend: str
    """The index back end's name (``index_backend``), e.g. ``faiss``."""
    kind: str
    """The back end's own name for the structure in use; for FAISS the tier: ``flat``
    (exact), ``sq8`` or ``pq`` (approximate, with an exact re-rank)."""
    faces: int
    memory_bytes: int
    """RAM the index holds for its faces (codes, ids, graphs), in bytes; 0 when unknown."""
    recall_at_10: float | None
    """recall@10 against exact search, measured when the index was built; 1.0 for exact
    search; None when never measured."""
    built_at: str | None
    """ISO 8601 UTC time of the build in use (None when it was only ever caught up)."""
    refused: bool = False
    """The last build was not put in use (``why`` says why): an older index answers."""
    why: str | None = None
    details: Mapping[str, Any] = field(default_factory=dict)
    """Engine-specific facts and tuning, by name (FAISS: structure, nprobe, ef_search,
    shortlist_factor, ...)."""

    @property
    def memory_per_face(self) -> float:
        return self.memory_bytes / self.faces if self.faces else 0.0


@dataclass(frozen=True)
class BuildReport:
    """What a rebuild or an optimize of the vector index did."""

    backend: str
    kind: str
    """The structure searched from now on (the one built, unless it was refused)."""
    built_kind: str
    """The structure that was built."""
    faces: int
    recall_at_10: float | None
    """recall@10 of the structure built, against exact search; None when not measured."""
    seconds: float
    message: str
    """One line for people: what was built and whether it is in use."""
    refused: bool = False
    """The structure built was not put in use (its measured recall was too low, say)."""
    why: str | None = None
    details: Mapping[str, Any] = field(default_factory=dict)
    """Engine-specific facts and tuning, by name."""
