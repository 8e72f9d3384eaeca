"""How far off can a shipped calibration be on people it never saw?

For each face model, the photos of a folder-per-identity set and the group photos are
ingested once (a throwaway data directory, as ``facetrail calibrate`` does). Then, for each
seed, the identities are split in half (``split_identities``): a calibration is fitted from
half A exactly as ``facetrail calibrate PEOPLE_A --groups GROUPS`` would (all pairs of largest
faces, a photo's largest face against its other faces, all pairs within each group photo),
and at the threshold it gives for each target FMR the estimate is compared with the FMR
observed on half B: the impostor pairs of largest faces of two different B identities. The
last column is the threshold half B's own impostor pairs would need for the target (where the
target is below one pair, just above B's highest impostor score: not resolved).

Run from the repository root (about 2 minutes for both models):

    .venv/bin/python bench/calibration_check.py
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np

from facetrail.calibration import Calibration
from facetrail.eval import metrics, runner
from facetrail.faces.base import score_of

DATA = Path("/work/shared/data/faces-small")
TARGETS = (1e-2, 1e-3, 1e-4)
WITH_GROUPS = "half A + group photos"
WITHOUT_GROUPS = "half A only"


def photos_of(model: str, people: Path, groups: list[Path]
              ) -> tuple[list[runner.PhotoFaces], list[runner.PhotoFaces], str, float]:
    """(identity photos, group photos, metric, quality floor) of ``model``."""
    folders = runner.identity_folders(people)
    owner = {p: who for who, ps in folders.items() for p in ps}
    with runner.throwaway(face_model=model) as engine:
        runner.ingest(engine, "people", people.resolve(), None)
        labelled = [p for p in runner.photo_faces(engine, "people", owner) if p.owner]
        group_photos = runner.ingest_groups(engine, groups)
        return labelled, group_photos, engine.model.metric, engine.settings.min_quality


def impostor_scores(photos: list[runner.PhotoFaces], metric: str) -> np.ndarray:
    """Scores of the largest faces of every two photos of different identities."""
    vectors = np.stack([p.faces[0].embedding for p in photos]).astype(np.float64)
    who = np.array([p.owner for p in photos])
    a, b = np.triu_indices(len(photos), k=1)
    keep = who[a] != who[b]
    dist = np.linalg.norm(vectors[a[keep]] - vectors[b[keep]], axis=1)
    return np.round(np.asarray(score_of(dist, metric)), 4)


def check(model: str, people: Path, groups: list[Path], seeds: int) -> list[dict[str, Any]]:
    labelled, group_photos, metric, mq = photos_of(model, people, groups)
    folders: dict[str, list[Path]] = {}
    for p in labelled:
        folders.setdefault(str(p.owner), []).append(p.path)
    rows = []
    for seed in range(seeds):
        split = runner.split_identities(folders, 0.5, seed)
        half_a = [p for p in labelled if p.owner in split.enrolled]
        half_b = [p for p in labelled if p.owner in split.never]
        observed_on = impostor_scores(half_b, metric)
        for data, with_groups in ((WITH_GROUPS, group_photos), (WITHOUT_GROUPS, [])):
            c = runner.comparisons(half_a, with_groups, metric, mq)
            cal = Calibration.fit(c.genuine, c.impostor, model=model, source=data,
                                  identities=len(split.enrolled), created_at="")
            for target in TARGETS:
                t = cal.threshold_for_fmr(target)
                estimate = cal.fmr_at(t)
                above = int(np.sum(observed_on >= t))
                rows.append({
                    "model": model, "calibrated_on": data, "seed": seed, "target": target,
                    "threshold": t, "threshold_b_needs": metrics.threshold_at_rate(observed_on,
                                                                                  target),
                    "estimated": estimate.fmr,
                    "extrapolated": estimate.extrapolated,
                    "observed": above / len(observed_on), "observed_count": above,
                    "impostor_pairs_b": len(observed_on),
                    "calibration_impostors": len(c.impostor),
                })
    return rows


def summarise(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for model, data, target in dict.fromkeys(
        (r["model"], r["calibrated_on"], r["target"]) for r in rows
    ):
        rs = [r for r in rows
              if (r["model"], r["calibrated_on"], r["target"]) == (model, data, target)]
        observed = [r["observed"] for r in rs]
        out.append({
            "model": model, "calibrated_on": data, "target": target, "seeds": len(rs),
            "threshold": (min(r["threshold"] for r in rs), max(r["threshold"] for r in rs)),
            "threshold_b_needs": (min(r["threshold_b_needs"] for r in rs),
                                  max(r["threshold_b_needs"] for r in rs)),
            "estimated_mean": float(np.mean([r["estimated"] for r in rs])),
            "extrapolated": sum(r["extrapolated"] for r in rs),
            "observed_mean": float(np.mean(observed)), "observed_max": max(observed),
            "observed_count": sum(r["observed_count"] for r in rs),
            "impostor_pairs_b": sum(r["impostor_pairs_b"] for r in rs),
            "over_target": sum(o > target for o in observed),
        })
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--people", type=Path, default=DATA / "people")
    parser.add_argument("--groups", type=Path, action="append", default=None,
                        help=f"repeatable; default {DATA / 'group'}")
    parser.add_argument("--model", action="append", default=None,
                        help="repeatable; default yunet-sface and dlib")
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    groups = args.groups or [DATA / "group"]
    rows = [r for m in (args.model or ["yunet-sface", "dlib"])
            for r in check(m, args.people, groups, args.seeds)]
    summary = summarise(rows)
    if args.json:
        print(json.dumps({"per_seed": rows, "summary": summary}, indent=2))
        return
    print("| model | calibrated on | target FMR | threshold (min-max) | estimated FMR at it (mean) "
          "| observed FMR on half B: mean (max) | B impostor pairs at or above / all "
          "| seeds over target | threshold half B itself needs (min-max) |")
    print("|---|---|---|---|---|---|---|---|---|")
    for s in summary:
        lo, hi = s["threshold"]
        b_lo, b_hi = s["threshold_b_needs"]
        note = f" ({s['extrapolated']} extrapolated)" if s["extrapolated"] else ""
        print(f"| {s['model']} | {s['calibrated_on']} | {s['target']:g} | {lo:.3f}-{hi:.3f} | "
              f"{s['estimated_mean']:.1e}{note} | {s['observed_mean']:.1e} "
              f"({s['observed_max']:.1e}) | {s['observed_count']} / {s['impostor_pairs_b']:,} "
              f"| {s['over_target']} of {s['seeds']} | {b_lo:.3f}-{b_hi:.3f} |")


if __name__ == "__main__":
    main()
