"""What ingest must not store, searches must not return, and the pages must not show: faces
that match an opt-out template (at the opt-out threshold), and faces lying where a face of the
same image was erased (its tombstone keeps the box). Used by the rights engine
(``rights.Rights``) in the ingesting process, by workers that write to the store themselves
(``pipeline/writing.py``), and wherever an image's pixels are served (``shown``).

The templates are read once and again only when they changed, in any process: the store's
``optout_version`` says, without reading them.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import replace

import numpy as np

from facetrail import imaging
from facetrail.faces import DEFAULT_FLOOR
from facetrail.faces.base import score_of
from facetrail.records import Box, ImageAnalysis
from facetrail.settings import Settings
from facetrail.sources.readback import image_bytes
from facetrail.store import Store

ERASED_OVERLAP = 0.5
"""A face whose box overlaps an erased face's box of its image by this much (IoU) is it."""


def shown(store: Store, settings: Settings, sha256: str) -> bytes:
    """An image's bytes as facetrail shows them (the image itself, its thumbnail, crops of the
    faces left in it, subject-access reports), read back where it was found
    (``readback.image_bytes``): the originals, or, if faces were erased from the image or
    left out of it at ingest, a copy with their boxes painted over (``imaging.masked``)."""
    data = image_bytes(store, sha256)
    boxes = store.erased_boxes(sha256)
    return imaging.masked(data, boxes, settings) if boxes else data


def shown_version(store: Store, sha256: str) -> str:
    """What tells one way of showing an image from another: '' for the original, else a short
    digest of the boxes painted over. Kept thumbnails and crops carry it in their names, so
    that a box added later (an erasure, another face model's ingest) makes them unused."""
    boxes = store.erased_boxes(sha256)
    if not boxes:
        return ""
    return "-m" + hashlib.sha256(json.dumps(boxes).encode()).hexdigest()[:12]


class Suppressor:
    def __init__(self, store: Store, threshold: float, metric: str) -> None:
        self.store = store
        self.threshold = threshold
        self.metric = metric
        self._templates: tuple[int, tuple[object, ...], np.ndarray] | None = None

    @classmethod
    def of(cls, store: Store, settings: Settings, metric: str) -> Suppressor:
        """With the opt-out threshold the settings give (the model's floor by default)."""
        threshold = settings.optout_threshold
        return cls(store, threshold if threshold is not None else DEFAULT_FLOOR[metric], metric)

    def templates(self, model_id: int) -> np.ndarray:
        """The model's opt-out templates, rows of a float32 matrix (cached by version)."""
        version = self.store.optout_version(model_id)
        cached = self._templates
        if cached is not None and cached[:2] == (model_id, version):
            return cached[2]
        _, matrix = self.store.optout_templates(model_id)
        self._templates = (model_id, version, matrix)
        return matrix

    def best(self, vectors: np.ndarray, matrix: np.ndarray) -> np.ndarray:
        """Each vector's best score against the rows of ``matrix``."""
        distances = np.linalg.norm(vectors[:, None, :] - matrix[None, :, :], axis=2)
        return np.asarray(score_of(distances, self.metric)).max(axis=1)

    def opted_out(self, face_ids: Sequence[int], model_id: int) -> set[int]:
        """Which of the stored faces ``face_ids`` match an opt-out template."""
        if not face_ids:
            return set()
        matrix = self.templates(model_id)
        if not len(matrix):
            return set()
        stored = self.store.embeddings(face_ids)
        if not stored:
            return set()
        ids = list(stored)
        vectors = np.stack([stored[i] for i in ids])
        return {ids[row] for row in np.flatnonzero(self.best(vectors, matrix) >= self.threshold)}

    def suppress(self, analysis: ImageAnalysis, model_id: int) -> tuple[ImageAnalysis, int]:
        """``analysis`` without the faces that match an opt-out, or lie where a face of the
        image was erased, their boxes in its ``hidden``; and how many were left out."""
        faces = list(analysis.faces)
        if not faces:
            return analysis, 0
        keep = np.ones(len(faces), bool)
        matrix = self.templates(model_id)
        if len(matrix) and matrix.shape[1] == len(faces[0].embedding):
            vectors = np.stack([f.embedding for f in faces]).astype(np.float32)
            keep &= self.best(vectors, matrix) < self.threshold
        for box in self.store.erased_boxes(analysis.sha256):
            keep &= np.array([overlap(f.box, box) < ERASED_OVERLAP for f in faces])
        if keep.all():
            return analysis, 0
        kept = tuple(f for f, k in zip(faces, keep, strict=True) if k)
        hidden = tuple(f.box for f, k in zip(faces, keep, strict=True) if not k)
        return (replace(analysis, faces=kept, hidden=analysis.hidden + hidden),
                int((~keep).sum()))


def overlap(a: Box, b: Box) -> float:
    """Intersection over union of two (x, y, w, h) boxes."""
    ax, ay, aw, ah = a
    bx, by, bw, bh = b
    w = max(0, min(ax + aw, bx + bw) - max(ax, bx))
    h = max(0, min(ay + ah, by + bh) - max(ay, by))
    union = aw * ah + bw * bh - w * h
    return w * h / union if union > 0 else 0.0
