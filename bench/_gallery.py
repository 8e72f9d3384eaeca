"""Large galleries from real descriptors, shared by the search benchmarks.

- ``load_descriptors``: every embedding facetrail stores for the faces of a folder, with one
  face model, computed once and cached in ``bench/results/``;
- ``noisy_tiles``: those descriptors repeated to any size, each copy plus Gaussian noise (and
  scaled back to unit length for a cosine model, whose index holds unit vectors);
- ``fill_store``: a gallery written through facetrail's store as synthetic images, the way
  ingest writes real ones, so that a ``Facetrail`` opened on the home indexes and searches it.
"""

from __future__ import annotations

import hashlib
import json
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from facetrail.engine import Facetrail
    from facetrail.faces.base import ModelInfo

REPO = Path(__file__).resolve().parent.parent
DEFAULT_DATA = REPO.parent / "shared" / "data" / "faces-small"
RESULTS = REPO / "bench" / "results"


def model_info(name: str) -> ModelInfo:
    """The embedding space of the shipped face model ``name`` (no model is loaded)."""
    from facetrail.faces import make_model
    from facetrail.settings import Settings

    return make_model(name, Settings(home=Path(tempfile.gettempdir()))).model


def cache_path(model: str) -> Path:
    return RESULTS / f"descriptors-{model}.npy"


def load_descriptors(data: Path, model: str = "dlib", refresh: bool = False) -> np.ndarray:
    """Every descriptor face model ``model`` stores for the faces in ``data``: float32
    (n, dim), sorted so the order does not depend on which worker finished first.

    Computed by ingesting ``data`` into a temporary facetrail home, then cached in
    ``bench/results/descriptors-<model>.npy``, with a ``.json`` sidecar naming the model key
    and the folder; another key or folder, or ``refresh``, computes them again.
    """
    cache = cache_path(model)
    meta_path = cache.with_suffix(".json")
    wanted = {"model": model_info(model).key, "data": str(data)}
    cached = not refresh and cache.exists() and meta_path.exists()
    if cached and json.loads(meta_path.read_text()) == wanted:
        return np.load(cache)
    import facetrail

    print(f"computing {model} descriptors: ingesting {data} (about a minute) ...",
          file=sys.stderr)
    with (tempfile.TemporaryDirectory(prefix="facetrail-bench-") as home,
          facetrail.open(home, face_model=model) as ft):
        ft.add_source(
            "bench", "folder", data,
            lawful_basis="benchmark on a public test set",
            purpose="search benchmark descriptors",
            retention_days=1,
        )
        ft.ingest("bench")
        chunks = [vectors for _, vectors in ft.store.iter_embeddings(ft.model_id)]
    vectors = np.concatenate(chunks).astype(np.float32)
    vectors = vectors[np.lexsort(vectors.T[::-1])]
    RESULTS.mkdir(parents=True, exist_ok=True)
    np.save(cache, vectors)
    meta_path.write_text(json.dumps(wanted))
    return vectors


def noisy_tiles(
    base: np.ndarray, n: int, sigma: float, rng: np.random.Generator, unit: bool = False,
    chunk: int = 100_000,
) -> np.ndarray:
    """``n`` float32 vectors: ``base`` repeated cyclically, each copy plus N(0, sigma^2) noise
    per dimension, so that no two are equal. ``unit``: each row scaled to unit length after
    the noise (a cosine model's vectors are unit length)."""
    out = np.empty((n, base.shape[1]), dtype=np.float32)
    for start in range(0, n, chunk):
        stop = min(n, start + chunk)
        rows = base[np.arange(start, stop) % len(base)]
        rows = rows + rng.normal(0.0, sigma, rows.shape).astype(np.float32)
        if unit:
            rows /= np.linalg.norm(rows, axis=1, keepdims=True)
        out[start:stop] = rows
    return out


def fill_store(engine: Facetrail, vectors: np.ndarray, per_image: int, data: Path) -> None:
    """Write ``vectors`` into ``engine``'s store under its face model, as synthetic images of
    ``per_image`` faces each (one ingest run of a source named 'bench' at ``data``)."""
    from facetrail.records import DetectedFace, ImageAnalysis, Provenance
    from facetrail.store import RunCounts

    source = engine.add_source("bench", "folder", data, lawful_basis="benchmark",
                               purpose="search benchmark gallery", retention_days=1,
                               actor="bench")
    store, model_id = engine.store, engine.model_id
    detector = engine.analyzer.model.detector.info.name
    runtime = engine.analyzer.model.runtime
    run_id = store.start_run(source.id, [str(data)], "bench", "bench", "0")
    landmarks = tuple((float(x), float(x)) for x in range(5))
    images = 0
    for n, start in enumerate(range(0, len(vectors), per_image)):
        faces = tuple(
            DetectedFace(box=(10 * i, 0, 80, 80), landmarks=landmarks, det_score=1.0,
                         quality=1.0, sharpness=100.0, embedding=v, runtime=runtime)
            for i, v in enumerate(vectors[start:start + per_image])
        )
        sha = hashlib.sha256(f"bench-image-{n}".encode()).hexdigest()
        store.add_image(
            ImageAnalysis(sha, 4000, 100, "JPEG", faces), 0, model_id, detector, source.id,
            run_id, [(Provenance(location=str(data / f"synthetic-{n}.jpg")), None)],
        )
        images += 1
    store.finish_run(run_id, "completed", RunCounts(items=images, images_new=images,
                                               faces=len(vectors)))
