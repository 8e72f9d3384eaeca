"""Test-time augmentation: is a mirrored-face average or dlib's jitter worth its cost?

For each photo of a folder-per-identity set, the largest face is detected and aligned once
(facetrail's ``dlib`` face model: ``DlibDetector``, ``DlibEmbedder.align``) and described
three ways by dlib's own ResNet:

1. plain: one descriptor of the 150 px chip (facetrail's default);
2. mirror: the mean of the chip's descriptor and its mirror image's (2 network passes);
3. jitter: dlib's ``num_jitters`` (N randomly jittered copies, N passes).

Each variant is scored on the verification pairs (ROC AUC, TAR at FAR 1e-2, EER) and on the
1:N split of ``facetrail eval identify`` (seed 0, half enrolled, ``--non-mated`` folder), and
timed per face (descriptor only; detection and alignment are shared). Run from the root:

    .venv/bin/python bench/tta.py
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from facetrail import imaging
from facetrail.eval import metrics
from facetrail.eval.runner import identity_folders, image_files, read_pairs, split_identities
from facetrail.faces import make_model
from facetrail.faces.base import Detection
from facetrail.faces.dlib_backend import weights_path
from facetrail.pipeline.analyze import Analyzer
from facetrail.settings import Settings, load_settings


def describe(analyzer: Analyzer, network: Any, path: Path, jitters: int
             ) -> dict[str, Any] | None:
    """The three descriptors of the largest face of ``path`` (None without a face), and the
    seconds each took. ``network``: dlib's ``face_recognition_model_v1``."""
    data = path.read_bytes()
    image = imaging.decode(data, analyzer.settings, sha256=imaging.sha256_hex(data))
    faces = analyzer.faces(image)  # facetrail's own choice of the largest face
    if not faces:
        return None
    face = faces[0]
    x, y, w, h = face.box
    detection = Detection(box=(float(x), float(y), float(w), float(h)),
                          landmarks=face.landmarks, score=face.det_score)
    chip = analyzer.model.embedder.align(image.pixels, [detection])[0]
    out: dict[str, Any] = {}
    t0 = time.perf_counter()
    plain = np.asarray(network.compute_face_descriptor(chip), dtype=np.float64)
    t1 = time.perf_counter()
    mirrored = np.asarray(
        network.compute_face_descriptor(np.ascontiguousarray(chip[:, ::-1])), dtype=np.float64
    )
    t2 = time.perf_counter()
    jittered = np.asarray(network.compute_face_descriptor(chip, jitters), dtype=np.float64)
    t3 = time.perf_counter()
    out["plain"], out["mirror"], out["jitter"] = plain, (plain + mirrored) / 2, jittered
    out["seconds"] = {"plain": t1 - t0, "mirror": t2 - t0, "jitter": t3 - t2}
    return out


def _settings() -> Settings:
    return load_settings(Path("/nonexistent-home"), face_model="dlib")


def score(a: np.ndarray, b: np.ndarray) -> float:
    return round(1.0 - float(np.linalg.norm(a - b)), 4)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--people", type=Path, default=Path("tests/data/faces/people"))
    parser.add_argument("--pairs", type=Path, default=Path("tests/data/faces/pairs.csv"))
    parser.add_argument("--root", type=Path, default=Path("tests/data/faces"))
    parser.add_argument("--non-mated", type=Path, default=Path("tests/data/faces/unknown"))
    parser.add_argument("--jitters", type=int, default=5)
    args = parser.parse_args()
    import dlib

    settings = _settings()
    analyzer = Analyzer(settings, make_model("dlib", settings))
    analyzer.model.load()
    network = dlib.face_recognition_model_v1(str(weights_path("resnet")))
    folders = identity_folders(args.people)
    photos = [p for ps in folders.values() for p in ps] + image_files(args.non_mated)
    described = {p: describe(analyzer, network, p, args.jitters) for p in photos}
    variants = ("plain", "mirror", "jitter")
    results: dict[str, dict[str, float]] = {}
    pairs = read_pairs(args.pairs, args.root)
    split = split_identities(folders, 0.5, seed=0)
    gallery = [folders[w][0] for w in split.enrolled]
    probes = [(w, p) for w in split.enrolled for p in folders[w][1:]]
    probes += [(w, p) for w in split.never for p in folders[w]]
    probes += [(f"nonmated:{p.name}", p) for p in image_files(args.non_mated)]
    for v in variants:
        def vec(p: Path, v: str = v) -> np.ndarray | None:
            d = described.get(p)
            return None if d is None else np.asarray(d[v])

        genuine: list[float] = []
        impostor: list[float] = []
        for pair in pairs:
            a, b = vec(pair.a), vec(pair.b)
            s = score(a, b) if a is not None and b is not None else -np.inf
            (genuine if pair.same else impostor).append(s)
        gal = [vec(p) for p in gallery]
        rows, who = [], []
        for w, p in probes:
            q = vec(p)
            rows.append([score(q, g) if q is not None and g is not None else -9.0 for g in gal])
            who.append(w)
        mated, non = metrics.outcomes_from_matrix(
            np.array(rows), list(split.enrolled), who, top=20
        )
        seconds = [d["seconds"][v] for d in described.values() if d is not None]
        results[v] = {
            "roc_auc": metrics.roc_auc(genuine, impostor),
            "tar_at_far_1e-2": metrics.tar_at_far(genuine, impostor, 0.01).value,
            "eer": metrics.eer(genuine, impostor).eer,
            "rank_1": metrics.rank_rate(mated, 1),
            "fnir_at_fpir_0.01": metrics.fnir_at_fpir(mated, non, 0.01, 20).value,
            "ms_per_face": 1000 * float(np.median(seconds)),
        }
    print(json.dumps({"jitters": args.jitters, "faces": sum(d is not None for d in
                      described.values()), "pairs": len(pairs), "mated": len(mated),
                      "nonmated": len(non), "variants": results}, indent=2))


if __name__ == "__main__":
    main()
