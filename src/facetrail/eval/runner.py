"""Evaluation runs through the pipeline users get: photos are ingested by ``Facetrail.ingest``
into a throwaway data directory and searched by ``Facetrail.search``. Only the bookkeeping
(which photo is whose, which comparisons to make) and the metrics are evaluation's own.
"""

from __future__ import annotations

import csv
import math
import os
import random
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from facetrail.audit import utc_now
from facetrail.calibration import Calibration
from facetrail.engine import Facetrail
from facetrail.errors import InputError, NoFaceError
from facetrail.eval import metrics
from facetrail.faces.base import ModelInfo, score_of
from facetrail.settings import Settings, load_settings
from facetrail.sources.base import IMAGE_SUFFIXES
from facetrail.store.base import LocatedFace

ACTOR = "facetrail-eval"
NO_THRESHOLD = -10.0
"""Below any score (1 - distance or a cosine, never under -3): every neighbour is listed."""


@contextmanager
def throwaway(work: Path | None = None, **overrides: Any) -> Iterator[Facetrail]:
    """An engine on a fresh data directory: ``work`` if given (kept), else a temporary one."""
    if work is not None:
        work.mkdir(parents=True, exist_ok=True)
        with Facetrail(load_settings(work, **overrides)) as engine:
            yield engine
        return
    with tempfile.TemporaryDirectory(prefix="facetrail-eval-") as tmp, Facetrail(
        load_settings(tmp, **overrides)
    ) as engine:
        yield engine


def ingest(engine: Facetrail, name: str, root: Path, paths: Sequence[Path] | None) -> None:
    """Register ``root`` as a source (if new) and ingest ``paths`` under it (all if None)."""
    if name not in {s.name for s in engine.sources()}:
        engine.add_source(name, "folder", root, lawful_basis="evaluation data",
                          purpose="measuring accuracy", retention_days=1, actor=ACTOR)
    engine.ingest(name, [Path(p) for p in paths] if paths is not None else None,
                  actor=ACTOR)


def largest_faces(engine: Facetrail, source: str) -> dict[Path, LocatedFace]:
    """Each ingested photo's largest face (ordinal 0), by resolved path."""
    return {
        Path(f.location): f
        for f in engine.store.source_faces(source, engine.model_id)
        if f.ordinal == 0
    }


def pair_score(a: LocatedFace, b: LocatedFace, model: ModelInfo) -> float:
    return model.score(float(np.linalg.norm(a.embedding - b.embedding)))


# -- pairs -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Pair:
    a: Path
    b: Path
    same: bool
    fold: int | None = None
    """The LFW set the pair belongs to (pairs.txt); None for CSV pairs."""


def read_pairs(path: Path, root: Path) -> list[Pair]:
    """LFW ``pairs.txt`` (``name n1 n2`` / ``name1 n1 name2 n2`` lines after a ``sets n``
    header; images at ``root/name/name_NNNN.jpg``) or CSV with ``path_a,path_b,same``."""
    root = root.resolve()
    text = path.read_text()
    first = text.splitlines()[0].strip() if text.strip() else ""
    if first.replace(",", " ").split()[:2] == ["path_a", "path_b"]:
        pairs = []
        for n, row in enumerate(csv.DictReader(text.splitlines()), start=2):
            try:
                same = row["same"].strip().lower() in ("1", "true", "yes", "same")
                pairs.append(Pair(root / row["path_a"].strip(), root / row["path_b"].strip(),
                                  same))
            except (KeyError, AttributeError) as exc:
                raise InputError(f"{path}:{n}: expected path_a,path_b,same") from exc
        return pairs
    return _lfw_pairs(path, text, root)


def _lfw_pairs(path: Path, text: str, root: Path) -> list[Pair]:
    lines = [line.split() for line in text.splitlines() if line.strip()]
    try:
        sets, per_set = (int(x) for x in lines[0][:2])
    except (ValueError, IndexError) as exc:
        raise InputError(f"{path}: neither a path_a,path_b,same CSV nor an LFW pairs.txt") from exc

    def image(name: str, number: str) -> Path:
        return root / name / f"{name}_{int(number):04d}.jpg"

    pairs = []
    for n, parts in enumerate(lines[1:]):
        fold = n // (2 * per_set) if len(lines) - 1 == sets * 2 * per_set else None
        if len(parts) == 3:
            pairs.append(Pair(image(parts[0], parts[1]), image(parts[0], parts[2]), True, fold))
        elif len(parts) == 4:
            pairs.append(Pair(image(parts[0], parts[1]), image(parts[2], parts[3]), False, fold))
        else:
            raise InputError(f"{path}:{n + 2}: expected 3 or 4 fields, got {len(parts)}")
    return pairs


@dataclass
class VerifyOutcome:
    pairs: list[Pair]
    scores: list[float]
    """One per pair; -inf when a photo had no face (failure to enrol: the pair is rejected)."""
    no_face: list[Path]
    seconds: float
    gallery_faces: int
    threshold: float
    extra: dict[str, Any] = field(default_factory=dict)


def verify(pairs_file: Path, root: Path, work: Path | None = None,
           **overrides: Any) -> VerifyOutcome:
    pairs = read_pairs(pairs_file, root)
    if not pairs:
        raise InputError(f"{pairs_file} lists no pairs")
    images = sorted({p.a for p in pairs} | {p.b for p in pairs})
    missing = [p for p in images if not p.is_file()]
    if missing:
        raise InputError(f"{len(missing)} image(s) of the pairs do not exist, e.g. {missing[0]}")
    started = time.perf_counter()
    with throwaway(work, **overrides) as engine:
        ingest(engine, "pairs", root.resolve(), images)
        faces = largest_faces(engine, "pairs")
        threshold = engine.score_floor
        size = engine.index.size
        model = engine.model
    scores = [
        pair_score(faces[p.a], faces[p.b], model) if p.a in faces and p.b in faces else -math.inf
        for p in pairs
    ]
    return VerifyOutcome(pairs, scores, [p for p in images if p not in faces],
                         round(time.perf_counter() - started, 1), size, threshold)


def verify_metrics(outcome: VerifyOutcome) -> dict[str, Any]:
    same = [p.same for p in outcome.pairs]
    genuine = [s for s, y in zip(outcome.scores, same, strict=True) if y]
    impostor = [s for s, y in zip(outcome.scores, same, strict=True) if not y]
    folds = (
        [p.fold for p in outcome.pairs]
        if all(p.fold is not None for p in outcome.pairs)
        else metrics.default_folds(same)
    )
    acc = metrics.kfold_accuracy(outcome.scores, same, [int(f or 0) for f in folds])
    e = metrics.eer(genuine, impostor)
    affected = sum(1 for s in outcome.scores if not math.isfinite(s))
    return {
        "pairs": len(outcome.pairs), "genuine": len(genuine), "impostor": len(impostor),
        "images": len({p.a for p in outcome.pairs} | {p.b for p in outcome.pairs}),
        "no_face_images": len(outcome.no_face),
        "no_face": [str(p) for p in outcome.no_face],
        "pairs_with_no_face": affected,
        "accuracy": {"mean": acc.mean, "std": acc.std, "folds": len(acc.per_fold),
                     "per_fold": list(acc.per_fold)},
        "roc_auc": metrics.roc_auc(genuine, impostor),
        "tar_at_far": [_point(metrics.tar_at_far(genuine, impostor, far))
                       for far in (1e-2, 1e-3)],
        "eer": {"eer": e.eer, "threshold": e.threshold},
        "at_default_threshold": {
            "threshold": outcome.threshold,
            "tar": metrics.accept_rate(genuine, outcome.threshold),
            "far": metrics.accept_rate(impostor, outcome.threshold),
        },
        "seconds": outcome.seconds,
    }


def _point(p: metrics.RatePoint) -> dict[str, Any]:
    return {"target": p.target, "threshold": _finite(p.threshold), "value": p.value,
            "observed": p.observed, "resolved": p.resolved}


def _finite(x: float) -> float | None:
    return x if math.isfinite(x) else None


# -- identities ------------------------------------------------------------------------------
def identity_folders(root: Path) -> dict[str, list[Path]]:
    """One folder per identity: ``{name: [photo paths, sorted]}`` (resolved)."""
    root = root.resolve()
    if not root.is_dir():
        raise InputError(f"{root} is not a folder of identity folders")
    out = {}
    for sub in sorted(p for p in root.iterdir() if p.is_dir()):
        photos = sorted(p for p in sub.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
        if photos:
            out[sub.name] = photos
    if not out:
        raise InputError(f"{root} has no identity folders with photos")
    return out


def image_files(root: Path) -> list[Path]:
    root = root.resolve()
    if root.is_file():
        return [root]
    return sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)


def all_pairs_scores(
    folders: dict[str, list[Path]], work: Path | None = None, **overrides: Any
) -> tuple[list[float], list[float], list[Path]]:
    """Genuine and impostor scores of every pair of photos (largest faces), and the photos
    with no face (left out)."""
    photos = [p for ps in folders.values() for p in ps]
    owner = {p: who for who, ps in folders.items() for p in ps}
    root = Path(_common_root(photos))
    with throwaway(work, **overrides) as engine:
        ingest(engine, "calibration", root, photos)
        faces = largest_faces(engine, "calibration")
        metric = engine.model.metric
    found = [p for p in photos if p in faces]
    if len({owner[p] for p in found}) < 2:
        raise InputError("calibration needs faces of at least two identities")
    vectors = np.stack([faces[p].embedding for p in found]).astype(np.float64)
    who = np.array([owner[p] for p in found])
    genuine: list[float] = []
    impostor: list[float] = []
    for i in range(len(found) - 1):
        dist = np.linalg.norm(vectors[i + 1 :] - vectors[i], axis=1)
        scores = np.round(score_of(dist, metric), 4)
        same = who[i + 1 :] == who[i]
        genuine += scores[same].tolist()
        impostor += scores[~same].tolist()
    return genuine, impostor, [p for p in photos if p not in faces]


def _common_root(paths: Sequence[Path]) -> str:
    return os.path.commonpath([str(p.parent) for p in paths])


@dataclass(frozen=True)
class Split:
    enrolled: tuple[str, ...]
    never: tuple[str, ...]


def split_identities(folders: dict[str, list[Path]], fraction: float, seed: int) -> Split:
    """Identities with at least two photos are shuffled with ``seed``; the first ``fraction``
    of them are enrolled. The rest, and single-photo identities, are never enrolled."""
    eligible = sorted(who for who, ps in folders.items() if len(ps) >= 2)
    random.Random(seed).shuffle(eligible)
    n = round(len(eligible) * fraction)
    enrolled = tuple(sorted(eligible[:n]))
    return Split(enrolled, tuple(sorted(set(folders) - set(enrolled))))


def probe_sets(photos: Sequence[Path], k: int) -> list[list[Path]]:
    """Sets of ``k`` photos of one person: one starting at each photo, wrapping around
    (so every photo leads one set and ``k`` = 1 is every photo alone)."""
    if len(photos) < k:
        return []
    return [[photos[(i + j) % len(photos)] for j in range(k)] for i in range(len(photos))]


@dataclass
class IdentifyOutcome:
    mated: list[metrics.MatedOutcome]
    nonmated: list[float]
    gallery_faces: int
    enrolled: int
    never_enrolled: int
    distractor_images: int
    probe_photos: int
    failed_probes: int
    """Probe sets in which a photo had no face: a miss when mated, no candidate when not."""
    top: int
    min_quality: float
    fusion: str
    seconds: float
    searches_per_second: float
    default_threshold: float = 0.45
    """The threshold a user's search of this gallery gets by default (calibrated or fixed)."""
    default_rule: str = "fixed"


def identify(
    root: Path,
    *,
    distractors: Path | None = None,
    nonmated: Path | None = None,
    seed: int = 0,
    fraction: float = 0.5,
    probe_photos: int = 1,
    top: int | None = None,
    min_quality: float | None = None,
    fusion: str | None = None,
    work: Path | None = None,
    **overrides: Any,
) -> IdentifyOutcome:
    folders = identity_folders(root)
    split = split_identities(folders, fraction, seed)
    gallery = [folders[who][0] for who in split.enrolled]
    mated_sets = [(who, s) for who in split.enrolled
                  for s in probe_sets(folders[who][1:], probe_photos)]
    nonmated_sets = [(who, s) for who in split.never
                     for s in probe_sets(folders[who], probe_photos)]
    if nonmated is not None:
        nonmated_sets += [(f"nonmated:{p.name}", s) for p in image_files(nonmated)
                          for s in probe_sets([p], probe_photos)]
    if not mated_sets or not nonmated_sets:
        raise InputError("identify needs mated and non-mated probes: check the folders")
    owner = {str(p): who for who in split.enrolled for p in folders[who][:1]}
    started = time.perf_counter()
    with throwaway(work, **overrides) as engine:
        ingest(engine, "gallery", root.resolve(), gallery)
        extra = image_files(distractors) if distractors is not None else []
        if distractors is not None:
            ingest(engine, "distractors", distractors.resolve(), None)
        top = top or engine.settings.top
        mq = engine.settings.min_quality if min_quality is None else min_quality
        fuse = fusion or engine.settings.fusion
        searched = time.perf_counter()
        failed = 0

        def candidates(photos: list[Path]) -> list[tuple[str, float]] | None:
            nonlocal failed
            try:
                result = engine.search(photos[0], more_probes=photos[1:], top=top,
                                       threshold=NO_THRESHOLD, min_quality=mq, fusion=fuse,
                                       case_ref="evaluation", purpose="measuring accuracy",
                                       actor=ACTOR)
            except NoFaceError:
                failed += 1
                return None
            return [(owner.get(c.appearances[0].location, "distractor"), c.score)
                    for c in result.candidates]

        mated = []
        for who, photos in mated_sets:
            found = candidates(photos)
            mated.append(metrics.MatedOutcome(None, None) if found is None
                         else metrics.mated_outcome(found, who))
        non = []
        for _, photos in nonmated_sets:
            found = candidates(photos)
            non.append(-math.inf if found is None else metrics.top_score(found))
        search_seconds = time.perf_counter() - searched
        size = engine.index.size
        default_threshold, default_rule, _ = engine.default_threshold()
    searches = len(mated_sets) + len(nonmated_sets)
    return IdentifyOutcome(
        mated=mated, nonmated=non, gallery_faces=size, enrolled=len(split.enrolled),
        never_enrolled=len(split.never), distractor_images=len(extra),
        probe_photos=probe_photos, failed_probes=failed, top=top, min_quality=mq, fusion=fuse,
        seconds=round(time.perf_counter() - started, 1),
        searches_per_second=round(searches / max(search_seconds, 1e-9), 2),
        default_threshold=default_threshold, default_rule=default_rule,
    )


def identify_metrics(o: IdentifyOutcome) -> dict[str, Any]:
    return {
        "gallery_faces": o.gallery_faces, "enrolled_identities": o.enrolled,
        "never_enrolled_identities": o.never_enrolled, "distractor_images": o.distractor_images,
        "mated_searches": len(o.mated), "nonmated_searches": len(o.nonmated),
        "probe_photos_per_search": o.probe_photos, "fusion": o.fusion,
        "failed_probes": o.failed_probes, "candidate_list_length": o.top,
        "min_quality": o.min_quality,
        "rank_1": metrics.rank_rate(o.mated, 1), "rank_10": metrics.rank_rate(o.mated, 10),
        "fnir_at_fpir": [_point(metrics.fnir_at_fpir(o.mated, o.nonmated, fpir, o.top))
                         for fpir in (0.01, 0.003)],
        "at_default_threshold": {
            "threshold": o.default_threshold, "rule": o.default_rule,
            "fnir": metrics.fnir(o.mated, o.default_threshold, o.top),
            "fpir": metrics.accept_rate(o.nonmated, o.default_threshold),
        },
        "seconds": o.seconds, "searches_per_second": o.searches_per_second,
    }


def calibrate(data: Path, root: Path | None, description: str | None, work: Path | None,
              settings: Settings, model: str, model_key: str) -> Calibration:
    """A calibration of face model ``model`` (whose key is ``model_key``) from a folder per
    identity (all pairs) or a pairs file (with ``root``), measured on a throwaway store with
    the same settings."""
    overrides = {**settings.model_dump(exclude={"home"}), "face_model": model}
    if data.is_dir():
        folders = identity_folders(data)
        genuine, impostor, no_face = all_pairs_scores(folders, work, **overrides)
        words = (f"all pairs among the largest faces of {data.name}/ "
                 f"({sum(map(len, folders.values())) - len(no_face)} photos with a face, "
                 f"{len(folders)} identities)")
        identities = len(folders)
    else:
        if root is None:
            raise InputError("a pairs file needs --root (the folder its paths are under)")
        outcome = verify(data, root, work, **overrides)
        same = [p.same for p in outcome.pairs]
        genuine = [s for s, y in zip(outcome.scores, same, strict=True) if y and math.isfinite(s)]
        impostor = [s for s, y in zip(outcome.scores, same, strict=True)
                    if not y and math.isfinite(s)]
        words = f"pairs of {data.name} ({len(outcome.no_face)} photos without a face left out)"
        identities = len({p.a.parent.name for p in outcome.pairs})
    try:
        return Calibration.fit(
            genuine, impostor, model=model_key,
            source=description or words, identities=identities, created_at=utc_now(),
        )
    except ValueError as exc:
        raise InputError(str(exc)) from exc
