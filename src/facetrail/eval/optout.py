"""Opt-out by face, measured: how many of a requester's faces an opt-out leaves in place
(missed suppression), and how many of other people's faces it erases and suppresses with
them (false suppression), at a range of thresholds (docs/optout-threshold.md).

Protocol. Every photo of the identity folders (and of the ``groups`` folders) is ingested
once into a throwaway data directory: that is the gallery. A photo's largest face is its
identity's; its other faces are somebody else. Then, for each identity with at least
``photos + 1`` photos with a face, a requester hands in ``photos`` of them (drawn with a seed
of its own, so a subset of the folders draws the same photos) and:

- the largest faces of the identity's other photos should match: each that scores under the
  threshold is a missed suppression;
- the largest faces of every other identity's photos, the other faces in the requester's own
  photos and every face of the group photos should not: each that scores at or above the
  threshold is a false suppression (a look-alike erased).

Faces beside another identity's largest face are nobody known and are not counted. Each photo
of the ``nonmated`` folder is a stranger's opt-out (its largest face): every gallery face it
matches is a false suppression.

The templates come from ``Rights.templates`` and are scored against the gallery by the
scoring suppression and search filtering use (``Rights._best``); ``Rights.matches``, which the
erasure at opt-out time asks the index with, is compared with it at the default threshold.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from facetrail.errors import InputError, NoFaceError
from facetrail.eval import metrics
from facetrail.eval.runner import (
    ModelRun,
    _model_fields,
    identity_folders,
    image_files,
    ingest,
    ingest_groups,
    photo_faces,
    throwaway,
)
from facetrail.rights import REVIEW_BAND, Rights

THRESHOLDS = tuple(round(0.30 + 0.05 * i, 2) for i in range(7))
"""The thresholds every run reports (0.30 ... 0.60), besides the default."""
FALSE_TARGET = 1e-3
"""False suppressions per (opt-out, other face) pair a threshold is sought for."""
SOURCE = "optout-people"
SHOWN = 5
"""How many of the worst pairs of each kind a summary names."""


@dataclass(frozen=True)
class Gallery:
    """The gallery's faces, row for row."""

    face_ids: np.ndarray
    vectors: np.ndarray
    names: tuple[str, ...]
    """Where each face was seen: ``identity/photo`` or ``group:photo``, and ``#n`` for a face
    other than the photo's largest (ordinal n)."""
    owner: np.ndarray
    """The identity of each face ("" when it is not a labelled one)."""
    photo_owner: np.ndarray
    """The identity of the photo each face is in ("" for group photos)."""
    photo: np.ndarray
    """The resolved path of each face's photo."""


@dataclass(frozen=True)
class OptoutTrial:
    """One opt-out: the best score of each face it should match and of each it should not."""

    requester: str
    """The identity, or ``stranger:photo`` for an opt-out of somebody not in the gallery."""
    photos: tuple[str, ...]
    mated: np.ndarray
    mated_faces: tuple[int, ...]
    """Rows of the gallery, as ``mated``."""
    others: np.ndarray
    other_faces: tuple[int, ...]
    index_disagreements: tuple[float, ...]
    """The scores of the faces on which ``Rights.matches`` and the scoring disagree at the
    default threshold."""


@dataclass
class OptoutOutcome:
    trials: list[OptoutTrial]
    strangers: list[OptoutTrial]
    gallery: Gallery
    identities: int
    photos_per_optout: int
    seed: int
    photos_without_face: int
    bystander_faces: int
    """Faces beside an identity photo's largest: counted for that identity's opt-out only."""
    group_faces: int
    strangers_without_face: int
    default_threshold: float
    seconds: float
    model: ModelRun


def requester_photos(photos: Sequence[Path], k: int, seed: int, identity: str) -> list[Path]:
    """The ``k`` photos an identity's requester hands in, drawn with a seed of its own."""
    return sorted(random.Random(f"{seed}/{identity}").sample(list(photos), k))


def optout(
    root: Path,
    *,
    photos: int = 1,
    seed: int = 0,
    groups: Sequence[Path] = (),
    nonmated: Path | None = None,
    work: Path | None = None,
    **overrides: Any,
) -> OptoutOutcome:
    folders = identity_folders(root)
    owner = {p: who for who, ps in folders.items() for p in ps}
    every = [p for ps in folders.values() for p in ps]
    strangers_photos = image_files(nonmated) if nonmated is not None else []
    started = time.perf_counter()
    with throwaway(work, **overrides) as engine:
        ingest(engine, SOURCE, root.resolve(), every)
        people = photo_faces(engine, SOURCE, owner)
        group_photos = ingest_groups(engine, groups)
        gallery = _gallery(people, group_photos, root.resolve())
        with_face = {p.path for p in people}
        rights = Rights(engine)
        default = rights.threshold
        trials = []
        for who, ps in folders.items():
            usable = [p for p in ps if p in with_face]
            if len(usable) <= photos:
                continue
            chosen = requester_photos(usable, photos, seed, who)
            templates = rights.templates([p.read_bytes() for p in chosen])
            taken = np.isin(gallery.photo, [str(p) for p in chosen])
            mated = (gallery.owner == who) & ~taken
            others = (((gallery.owner != "") & (gallery.owner != who))
                      | ((gallery.owner == "") & (gallery.photo_owner == who))
                      | (gallery.photo_owner == ""))
            trials.append(_trial(rights, gallery, who, chosen, templates, mated, others,
                                 default))
        strangers = []
        no_face = 0
        for p in strangers_photos:
            try:
                templates = rights.templates([p.read_bytes()])
            except NoFaceError:
                no_face += 1
                continue
            none = np.zeros(len(gallery.owner), bool)
            strangers.append(_trial(rights, gallery, f"stranger:{p.name}", [p], templates,
                                    none, ~none, default))
        model = ModelRun.of(engine)
    if not trials:
        raise InputError(f"no identity of {root} has more than {photos} photo(s) with a face "
                         "to opt out with and to find")
    bystanders = int(np.sum((gallery.owner == "") & (gallery.photo_owner != "")))
    return OptoutOutcome(
        trials=trials, strangers=strangers, gallery=gallery, identities=len(folders),
        photos_per_optout=photos, seed=seed,
        photos_without_face=len(every) - len(with_face), bystander_faces=bystanders,
        group_faces=int(np.sum(gallery.photo_owner == "")),
        strangers_without_face=no_face, default_threshold=default,
        seconds=round(time.perf_counter() - started, 1), model=model,
    )


def _gallery(people: Sequence[Any], groups: Sequence[Any], root: Path) -> Gallery:
    ids, vectors, names, owner, photo_owner, photo = [], [], [], [], [], []
    for p in [*people, *groups]:
        for f in p.faces:
            ids.append(f.face_id)
            vectors.append(f.embedding)
            where = (str(p.path.relative_to(root)) if p.owner is not None
                     else f"group:{p.path.name}")
            names.append(where if f.ordinal == 0 else f"{where}#{f.ordinal}")
            owner.append(p.owner if p.owner is not None and f.ordinal == 0 else "")
            photo_owner.append(p.owner or "")
            photo.append(str(p.path))
    if not ids:
        raise InputError(f"no face was found in the photos of {root}")
    return Gallery(np.array(ids, np.int64), np.stack(vectors).astype(np.float32),
                   tuple(names), np.array(owner), np.array(photo_owner), np.array(photo))


def _trial(rights: Rights, gallery: Gallery, requester: str, chosen: Sequence[Path],
           templates: np.ndarray, mated: np.ndarray, others: np.ndarray,
           default: float) -> OptoutTrial:
    # The very scoring that suppresses at ingest and filters searches.
    best = rights.suppressor.best(gallery.vectors, templates)
    # The erasure at opt-out time asks the index instead.
    by_index = {m.face_id for m in rights.matches(templates, default)}
    in_gallery = set(gallery.face_ids.tolist())
    by_scoring = set(gallery.face_ids[best >= default].tolist())
    differ = np.isin(gallery.face_ids, list((by_index & in_gallery) ^ by_scoring))
    return OptoutTrial(
        requester=requester, photos=tuple(p.name for p in chosen),
        mated=best[mated], mated_faces=tuple(np.flatnonzero(mated).tolist()),
        others=best[others], other_faces=tuple(np.flatnonzero(others).tolist()),
        index_disagreements=tuple(float(x) for x in best[differ]),
    )


# -- the summary -------------------------------------------------------------------------------
def _pooled(trials: Sequence[OptoutTrial], part: str) -> np.ndarray:
    arrays = [getattr(t, part) for t in trials]
    return np.concatenate(arrays) if arrays else np.zeros(0)


def _rate(hit: np.ndarray) -> float | None:
    return float(np.mean(hit)) if len(hit) else None


def at_threshold(o: OptoutOutcome, t: float) -> dict[str, Any]:
    """The rates of ``o`` at threshold ``t`` (a face matches when its score >= ``t``)."""
    mated, others = _pooled(o.trials, "mated"), _pooled(o.trials, "others")
    band = t - REVIEW_BAND
    row: dict[str, Any] = {
        "threshold": t,
        "default": math.isclose(t, o.default_threshold),
        "missed_suppression": _rate(mated < t),
        "false_suppression": _rate(others >= t),
        "optouts_missing_some": sum(bool(np.any(x.mated < t)) for x in o.trials),
        "optouts_hitting_others": sum(bool(np.any(x.others >= t)) for x in o.trials),
        "review_mated": _rate((mated >= band) & (mated < t)),
        "review_others_per_optout": float(np.mean(
            [np.sum((x.others >= band) & (x.others < t)) for x in o.trials])),
    }
    if o.strangers:
        row["stranger_false_suppression"] = _rate(_pooled(o.strangers, "others") >= t)
        row["strangers_hitting_someone"] = sum(bool(np.any(x.others >= t))
                                               for x in o.strangers)
    return row


def _worst(o: OptoutOutcome, part: str) -> list[dict[str, Any]]:
    """The ``SHOWN`` other faces scoring highest, or mated faces scoring lowest."""
    rows = []
    for x in [*o.trials, *o.strangers] if part == "others" else o.trials:
        scores, faces = (x.others, x.other_faces) if part == "others" else (x.mated,
                                                                            x.mated_faces)
        rows += [(float(s), x.requester, o.gallery.names[f])
                 for s, f in zip(scores, faces, strict=True)]
    rows.sort(key=lambda r: -r[0] if part == "others" else r[0])
    return [{"score": round(s, 4), "optout": who, "face": face} for s, who, face in rows[:SHOWN]]


def optout_metrics(o: OptoutOutcome) -> dict[str, Any]:
    others = _pooled(o.trials, "others")
    mated = _pooled(o.trials, "mated")
    grid = sorted({*THRESHOLDS, round(o.default_threshold, 4)})
    # Rounded up to a threshold a setting can hold, so the rate stays within the target.
    t = metrics.threshold_at_rate(others, FALSE_TARGET)
    t = math.ceil(t * 1e4) / 1e4 if math.isfinite(t) else t
    return {
        **_model_fields(o.model),
        "identities": o.identities, "photos_per_optout": o.photos_per_optout, "seed": o.seed,
        "gallery_faces": len(o.gallery.face_ids), "group_faces": o.group_faces,
        "bystander_faces": o.bystander_faces,
        "photos_without_face": o.photos_without_face,
        "optouts": len(o.trials), "mated_pairs": len(mated), "other_pairs": len(others),
        "stranger_optouts": len(o.strangers),
        "stranger_pairs": len(_pooled(o.strangers, "others")),
        "strangers_without_face": o.strangers_without_face,
        "default_threshold": o.default_threshold, "review_band": REVIEW_BAND,
        "thresholds": [at_threshold(o, x) for x in grid],
        "at_false_suppression": {
            "target": FALSE_TARGET,
            "threshold": round(t, 4) if math.isfinite(t) else None,
            "missed_suppression": _rate(mated < t),
            "observed": _rate(others >= t),
            "resolved": FALSE_TARGET * len(others) >= 1,
        },
        "highest_others": _worst(o, "others"),
        "lowest_mated": _worst(o, "mated"),
        "index_disagreements": [round(s, 6) for x in [*o.trials, *o.strangers]
                                for s in x.index_disagreements],
        "seconds": o.seconds,
    }
