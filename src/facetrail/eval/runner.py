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
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from facetrail.audit import utc_now
from facetrail.calibration import Calibration
from facetrail.engine import Facetrail
from facetrail.errors import ConfigError, InputError, NoFaceError
from facetrail.eval import metrics
from facetrail.faces.base import SCORE_MEANING, ModelInfo, score_of
from facetrail.settings import Settings, load_settings
from facetrail.sources.base import IMAGE_SUFFIXES
from facetrail.store import default_store_url, open_store
from facetrail.store.base import LocatedFace

ACTOR = "facetrail-eval"
NO_THRESHOLD = -10.0
"""Below any score (1 - distance or a cosine, never under -3): every neighbour is listed."""


@contextmanager
def throwaway(work: Path | None = None, declared: Mapping[str, str] | None = None,
              **overrides: Any) -> Iterator[Facetrail]:
    """An engine on a fresh data directory: ``work`` if given (kept), else a temporary one.
    ``declared``: face models declared by the user (name -> declaration, as a data
    directory's store keeps them) that the engine may be asked to use."""
    if work is not None:
        work.mkdir(parents=True, exist_ok=True)
        _declare(work, declared)
        with Facetrail(load_settings(work, **overrides)) as engine:
            yield engine
        return
    with tempfile.TemporaryDirectory(prefix="facetrail-eval-") as tmp:
        _declare(Path(tmp), declared)
        # A throwaway SQLite store, whatever store the environment names.
        overrides = {**overrides, "store_url": default_store_url(Path(tmp))}
        with Facetrail(load_settings(tmp, **overrides)) as engine:
            yield engine


def _declare(home: Path, declared: Mapping[str, str] | None) -> None:
    if not declared:
        return
    store = open_store(default_store_url(home))
    try:
        known = store.user_models()
        for name, spec in declared.items():
            if name not in known:
                store.add_user_model(name, spec, ACTOR)
    finally:
        store.close()


def model_runs(models: Sequence[str], work: Path | None) -> list[tuple[str | None, Path | None]]:
    """(face model, work directory) of each run of a side-by-side evaluation: the models in
    the order given, once each (none: the default model). With several, each gets its own
    data directory: ``work/<model>`` when ``work`` is given."""
    names = list(dict.fromkeys(models))
    if len(names) <= 1:
        return [(names[0] if names else None, work)]
    return [(name, work / name if work is not None else None) for name in names]


def model_overrides(model: str | None, overrides: dict[str, Any]) -> dict[str, Any]:
    """Settings of one run: ``overrides``, with the face model of its new data directory."""
    return overrides if model is None else {**overrides, "face_model": model}


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


@dataclass(frozen=True)
class ModelRun:
    """Which face model an evaluation ran, for its report."""

    name: str
    key: str
    metric: str

    @classmethod
    def of(cls, engine: Facetrail) -> ModelRun:
        return cls(engine.model_name, engine.model.key, engine.model.metric)


@dataclass
class VerifyOutcome:
    pairs: list[Pair]
    scores: list[float]
    """One per pair; -inf when a photo had no face (failure to enrol: the pair is rejected)."""
    no_face: list[Path]
    seconds: float
    gallery_faces: int
    threshold: float
    model: ModelRun
    extra: dict[str, Any] = field(default_factory=dict)


def verify(pairs_file: Path, root: Path, work: Path | None = None,
           **overrides: Any) -> VerifyOutcome:
    """Score every pair of ``pairs_file`` (images under ``root``) on a throwaway data
    directory made with the settings ``overrides`` (``face_model`` picks the model)."""
    pairs, images = _checked_pairs(pairs_file, root)
    started = time.perf_counter()
    with throwaway(work, **overrides) as engine:
        outcome = verify_in(engine, pairs, images, root)
    outcome.seconds = round(time.perf_counter() - started, 1)
    return outcome


def _checked_pairs(pairs_file: Path, root: Path) -> tuple[list[Pair], list[Path]]:
    pairs = read_pairs(pairs_file, root)
    if not pairs:
        raise InputError(f"{pairs_file} lists no pairs")
    same = [p.same for p in pairs]
    if all(same) or not any(same):
        raise InputError(f"{pairs_file} needs pairs of the same person and of different people;"
                         f" it has only {'same' if all(same) else 'different'}-person pairs")
    folds = pair_folds(pairs)
    if len(set(folds)) < 2:
        raise InputError(f"{pairs_file} makes one fold: accuracy is measured on each fold with "
                         "a threshold chosen on the others, so it needs at least two")
    for fold in sorted(set(folds)):
        train = [y for y, f in zip(same, folds, strict=True) if f != fold]
        if all(train) or not any(train):
            raise InputError(f"{pairs_file}: without fold {fold}, the other folds hold only "
                             f"{'same' if all(train) else 'different'}-person pairs, so no "
                             "threshold can be chosen on them")
    images = sorted({p.a for p in pairs} | {p.b for p in pairs})
    missing = [p for p in images if not p.is_file()]
    if missing:
        raise InputError(f"{len(missing)} image(s) of the pairs do not exist, e.g. {missing[0]}")
    return pairs, images


def pair_folds(pairs: list[Pair]) -> list[int]:
    """The LFW folds the pairs file gives, else round-robin folds within each class."""
    if all(p.fold is not None for p in pairs):
        return [int(p.fold or 0) for p in pairs]
    return metrics.default_folds([p.same for p in pairs])


def verify_in(engine: Facetrail, pairs: list[Pair], images: list[Path],
              root: Path) -> VerifyOutcome:
    """``verify`` on an open engine: ingest the ``images`` under ``root``, score the pairs."""
    ingest(engine, "pairs", root.resolve(), images)
    faces = largest_faces(engine, "pairs")
    model = engine.model
    scores = [
        pair_score(faces[p.a], faces[p.b], model) if p.a in faces and p.b in faces else -math.inf
        for p in pairs
    ]
    return VerifyOutcome(pairs, scores, [p for p in images if p not in faces], 0.0,
                         engine.index.size, engine.score_floor, model=ModelRun.of(engine))


def verify_metrics(outcome: VerifyOutcome) -> dict[str, Any]:
    same = [p.same for p in outcome.pairs]
    genuine = [s for s, y in zip(outcome.scores, same, strict=True) if y]
    impostor = [s for s, y in zip(outcome.scores, same, strict=True) if not y]
    folds = pair_folds(outcome.pairs)
    acc = metrics.kfold_accuracy(outcome.scores, same, [int(f or 0) for f in folds])
    e = metrics.eer(genuine, impostor)
    affected = sum(1 for s in outcome.scores if not math.isfinite(s))
    return {
        **_model_fields(outcome.model),
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


def _model_fields(model: ModelRun) -> dict[str, Any]:
    return {"model": model.name, "model_key": model.key, "score": SCORE_MEANING[model.metric]}


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


@dataclass(frozen=True)
class PhotoFaces:
    """The faces found in one photo, largest first (by ordinal)."""

    path: Path
    owner: str | None
    """The identity of its largest face (a photo of an identity folder), or None (a group
    photo: nobody in particular)."""
    faces: tuple[LocatedFace, ...]


def photo_faces(engine: Facetrail, source: str,
                owner: dict[Path, str] | None = None) -> list[PhotoFaces]:
    """Every photo of ``source`` with at least one face, by resolved path; ``owner`` names
    the identity of each photo's largest face (absent: None)."""
    by_photo: dict[Path, list[LocatedFace]] = {}
    for f in engine.store.source_faces(source, engine.model_id):
        by_photo.setdefault(Path(f.location), []).append(f)
    return [
        PhotoFaces(path, (owner or {}).get(path), tuple(sorted(fs, key=lambda f: f.ordinal)))
        for path, fs in sorted(by_photo.items())
    ]


@dataclass
class Comparisons:
    """Genuine and impostor scores for a calibration, and where the impostor pairs came from."""

    genuine: list[float]
    impostor: list[float]
    between_identities: int
    """Impostor pairs of largest faces of photos of different identities."""
    within_people_photos: int
    """Impostor pairs of a photo's largest face with another face in it (identity photos)."""
    people_photos_with_others: int
    within_group_photos: int
    """Impostor pairs of two faces of one group photo."""
    group_photos: int
    """Group photos with at least two faces of enough quality."""
    group_faces: int
    """Faces of enough quality in the group photos."""
    low_quality: int
    """Faces left out for a quality under the floor (an identity photo's largest is kept)."""
    min_quality: float

    @property
    def counts(self) -> dict[str, int]:
        return {"genuine": len(self.genuine), "impostor": len(self.impostor),
                "between_identities": self.between_identities,
                "within_people_photos": self.within_people_photos,
                "within_group_photos": self.within_group_photos,
                "group_photos": self.group_photos, "group_faces": self.group_faces,
                "low_quality_faces_left_out": self.low_quality}


def comparisons(people: Sequence[PhotoFaces], groups: Sequence[PhotoFaces], metric: str,
                min_quality: float) -> Comparisons:
    """Scores of pairs whose truth is known without labelling every face:

    - the largest faces of every two photos of identity folders: genuine when the identities
      agree, impostor when they differ;
    - a photo's largest face and each other face in it of quality >= ``min_quality`` (the
      labelled person and somebody beside them): impostor;
    - every two faces of one group photo, both of quality >= ``min_quality``: impostor (two
      faces in one photo are two people).

    Scores are rounded to 4 places, as search reports them."""
    labelled = [p for p in people if p.owner is not None and p.faces]
    if len({p.owner for p in labelled}) < 2:
        raise InputError("calibration needs faces of at least two identities")
    genuine, between = _identity_pairs(labelled, metric)
    c = within_photos(labelled, groups, metric, min_quality)
    c.genuine = genuine
    c.impostor = between + c.impostor
    c.between_identities = len(between)
    return c


def _identity_pairs(labelled: Sequence[PhotoFaces],
                    metric: str) -> tuple[list[float], list[float]]:
    vectors = np.stack([p.faces[0].embedding for p in labelled]).astype(np.float64)
    who = np.array([p.owner for p in labelled])
    genuine: list[float] = []
    impostor: list[float] = []
    for i in range(len(labelled) - 1):
        dist = np.linalg.norm(vectors[i + 1 :] - vectors[i], axis=1)
        scores = np.round(score_of(dist, metric), 4)
        same = who[i + 1 :] == who[i]
        genuine += scores[same].tolist()
        impostor += scores[~same].tolist()
    return genuine, impostor


def within_photos(people: Sequence[PhotoFaces], groups: Sequence[PhotoFaces], metric: str,
                  min_quality: float) -> Comparisons:
    """The impostor pairs within photos (``comparisons``, without the pairs across photos)."""
    impostor: list[float] = []
    low = with_others = 0
    for p in people:
        others = [f for f in p.faces[1:] if f.quality >= min_quality]
        low += len(p.faces) - 1 - len(others)
        if others:
            with_others += 1
            impostor += _scores(np.stack([f.embedding for f in others]),
                                p.faces[0].embedding[None, :], metric)
    in_people = len(impostor)
    group_photos = group_faces = 0
    for p in groups:
        good = [f for f in p.faces if f.quality >= min_quality]
        low += len(p.faces) - len(good)
        if len(good) < 2:
            continue
        group_photos += 1
        group_faces += len(good)
        vectors = np.stack([f.embedding for f in good])
        a, b = np.triu_indices(len(good), k=1)
        impostor += _scores(vectors[a], vectors[b], metric)
    return Comparisons(
        genuine=[], impostor=impostor, between_identities=0, within_people_photos=in_people,
        people_photos_with_others=with_others, within_group_photos=len(impostor) - in_people,
        group_photos=group_photos, group_faces=group_faces, low_quality=low,
        min_quality=min_quality,
    )


def _scores(a: np.ndarray, b: np.ndarray, metric: str) -> list[float]:
    dist = np.linalg.norm(a.astype(np.float64) - b.astype(np.float64), axis=1)
    return [float(x) for x in np.round(score_of(dist, metric), 4)]


def ingest_groups(engine: Facetrail, groups: Sequence[Path]) -> list[PhotoFaces]:
    """Ingest each folder of ``groups`` as its own source; the faces of all their photos."""
    photos: list[PhotoFaces] = []
    for n, folder in enumerate(groups, start=1):
        if not image_files(folder):
            raise InputError(f"{folder} has no photos")
        name = f"groups-{n}"
        ingest(engine, name, folder.resolve(), None)
        photos += photo_faces(engine, name)
    return photos


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
    model: ModelRun
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
        model = ModelRun.of(engine)
    searches = len(mated_sets) + len(nonmated_sets)
    return IdentifyOutcome(
        mated=mated, nonmated=non, gallery_faces=size, enrolled=len(split.enrolled),
        never_enrolled=len(split.never), distractor_images=len(extra),
        probe_photos=probe_photos, failed_probes=failed, top=top, min_quality=mq, fusion=fuse,
        seconds=round(time.perf_counter() - started, 1),
        searches_per_second=round(searches / max(search_seconds, 1e-9), 2),
        default_threshold=default_threshold, default_rule=default_rule, model=model,
    )


def identify_metrics(o: IdentifyOutcome) -> dict[str, Any]:
    return {
        **_model_fields(o.model),
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


@dataclass(frozen=True)
class CalibrationRun:
    calibration: Calibration
    counts: dict[str, int]
    """Where the comparisons came from (``Comparisons.counts``; pairs files: genuine and
    impostor only)."""


def calibrate(data: Path, root: Path | None, description: str | None, work: Path | None,
              settings: Settings, model: str, model_key: str,
              groups: Sequence[Path] = (),
              declared: Mapping[str, str] | None = None) -> CalibrationRun:
    """A calibration of face model ``model`` (whose key is ``model_key``), measured on a
    throwaway data directory with the same settings, from ``data``: a folder per identity
    (``comparisons``) or a pairs file (with ``root``); plus, as impostors, the pairs of faces
    within each photo of the ``groups`` folders. Faces besides a photo's largest need
    ``settings.min_quality``."""
    overrides = {**settings.model_dump(exclude={"home"}), "face_model": model}
    mq = settings.min_quality
    with throwaway(work, declared, **overrides) as engine:
        if engine.model.key != model_key:
            raise ConfigError(
                f"the calibration run's face model {model!r} is {engine.model.key}, not "
                f"{model_key}: its files or settings differ from this data directory's"
            )
        metric = engine.model.metric
        if data.is_dir():
            folders = identity_folders(data)
            photos = [p for ps in folders.values() for p in ps]
            owner = {p: who for who, ps in folders.items() for p in ps}
            ingest(engine, "calibration", Path(_common_root(photos)), photos)
            people = [p for p in photo_faces(engine, "calibration", owner)
                      if p.owner is not None]
            c = comparisons(people, ingest_groups(engine, groups), metric, mq)
            words = (f"all pairs among the largest faces of {data.name}/ ({len(people)} photos "
                     f"with a face, {len(folders)} identities: {len(c.genuine):,} genuine, "
                     f"{c.between_identities:,} impostor pairs)")
            if c.within_people_photos:
                words += (f"; {c.within_people_photos:,} impostor pairs of a photo's largest "
                          f"face with the other faces (quality >= {mq:g}) in "
                          f"{c.people_photos_with_others} of those photos")
            identities = len(folders)
        else:
            if root is None:
                raise InputError("a pairs file needs --root (the folder its paths are under)")
            pairs, images = _checked_pairs(data, root)
            outcome = verify_in(engine, pairs, images, root)
            c = within_photos([], ingest_groups(engine, groups), metric, mq)
            for s, pair in zip(outcome.scores, outcome.pairs, strict=True):
                if math.isfinite(s):
                    (c.genuine if pair.same else c.impostor).append(s)
                    c.between_identities += not pair.same
            words = (f"pairs of {data.name} ({len(c.genuine):,} genuine, "
                     f"{c.between_identities:,} impostor; {len(outcome.no_face)} photos "
                     "without a face left out)")
            identities = len({p.a.parent.name for p in outcome.pairs})
    if groups:
        words += (f"; {c.within_group_photos:,} impostor pairs among the {c.group_faces:,} "
                  f"faces (quality >= {mq:g}) within each of {c.group_photos} photos of "
                  f"{', '.join(g.name + '/' for g in groups)}")
    try:
        calibration = Calibration.fit(
            c.genuine, c.impostor, model=model_key,
            source=description or words, identities=identities, created_at=utc_now(),
        )
    except ValueError as exc:
        raise InputError(str(exc)) from exc
    return CalibrationRun(calibration, c.counts)
