"""Verification (1:1) and identification (1:N) metrics, from scores alone.

Scores are "higher is more alike" (facetrail's ``1 - distance``). A comparison is accepted
when ``score >= threshold``. Terms follow ISO/IEC 19795-1 and NIST FRTE 1:N:

- FMR / FAR: fraction of impostor comparisons accepted; TAR = 1 - FNMR: genuine accepted.
- FPIR: fraction of non-mated searches (the person is not in the gallery) that return at
  least one candidate at or above the threshold.
- FNIR: fraction of mated searches whose mate is not among the candidates returned at or
  above the threshold within the candidate list.

Thresholds for a target rate are chosen on the empirical distribution: the lowest threshold
whose observed rate does not exceed the target. A target below ``1 / n`` (n impostor
comparisons or non-mated searches) cannot be resolved; results say so (``resolved``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


def _arr(values: Sequence[float] | np.ndarray) -> np.ndarray:
    return np.asarray(values, dtype=np.float64).ravel()


def threshold_at_rate(negatives: Sequence[float] | np.ndarray, rate: float) -> float:
    """The lowest threshold at which at most ``rate`` of ``negatives`` score >= it.

    With ``n`` negatives, ``floor(rate * n)`` of them may be accepted; the threshold sits just
    above the next highest one. ``-inf`` if all may be accepted.
    """
    neg = np.sort(_arr(negatives))[::-1]
    allowed = math.floor(rate * len(neg) + 1e-9)
    if allowed >= len(neg):
        return -math.inf
    return float(np.nextafter(neg[allowed], math.inf))


def accept_rate(scores: Sequence[float] | np.ndarray, threshold: float) -> float:
    s = _arr(scores)
    return float(np.mean(s >= threshold)) if len(s) else math.nan


def roc_auc(genuine: Sequence[float], impostor: Sequence[float]) -> float:
    """Probability that a genuine score exceeds an impostor one (ties count one half)."""
    g, i = _arr(genuine), _arr(impostor)
    both = np.concatenate([g, i])
    order = both.argsort(kind="mergesort")
    ranks = np.empty(len(both), dtype=np.float64)
    ranks[order] = np.arange(1, len(both) + 1)
    # Average ranks over ties.
    sorted_vals = both[order]
    _, first, counts = np.unique(sorted_vals, return_index=True, return_counts=True)
    for start, count in zip(first, counts, strict=True):
        if count > 1:
            ranks[order[start : start + count]] = start + (count + 1) / 2
    u = ranks[: len(g)].sum() - len(g) * (len(g) + 1) / 2
    return float(u / (len(g) * len(i)))


@dataclass(frozen=True)
class RatePoint:
    target: float
    """The requested FAR (or FPIR)."""
    threshold: float
    value: float
    """TAR at that FAR (or FNIR at that FPIR)."""
    observed: float
    """The rate actually observed at the threshold (<= target)."""
    resolved: bool
    """False when the target is below 1 / n negatives: the point is not measurable."""


def tar_at_far(genuine: Sequence[float], impostor: Sequence[float], far: float) -> RatePoint:
    imp = _arr(impostor)
    t = threshold_at_rate(imp, far)
    return RatePoint(far, t, accept_rate(genuine, t), accept_rate(imp, t), far * len(imp) >= 1)


@dataclass(frozen=True)
class Eer:
    eer: float
    threshold: float


def eer(genuine: Sequence[float], impostor: Sequence[float]) -> Eer:
    """Equal error rate: where FNMR and FMR cross (their mean at the closest threshold)."""
    g, i = _arr(genuine), _arr(impostor)
    best = (math.inf, 0.0, 0.0)
    for t in np.unique(np.concatenate([g, i])):
        fnmr, fmr = float(np.mean(g < t)), float(np.mean(i >= t))
        gap = abs(fnmr - fmr)
        if gap < best[0]:
            best = (gap, (fnmr + fmr) / 2, float(t))
    return Eer(best[1], best[2])


@dataclass(frozen=True)
class FoldAccuracy:
    mean: float
    std: float
    per_fold: tuple[float, ...]
    thresholds: tuple[float, ...]


def best_threshold(scores: np.ndarray, same: np.ndarray) -> float:
    """The threshold that maximises accuracy (midpoint between neighbouring scores)."""
    values = np.unique(scores)
    candidates = np.concatenate([[values[0] - 1e-6], (values[:-1] + values[1:]) / 2,
                                 [values[-1] + 1e-6]])
    acc = [float(np.mean((scores >= t) == same)) for t in candidates]
    return float(candidates[int(np.argmax(acc))])


def kfold_accuracy(
    scores: Sequence[float], same: Sequence[bool], folds: Sequence[int]
) -> FoldAccuracy:
    """LFW protocol: for each fold, the threshold is chosen on the other folds and the
    accuracy measured on this one. Reported as mean and standard deviation over folds."""
    s, y, f = _arr(scores), np.asarray(same, dtype=bool), np.asarray(folds)
    per_fold, thresholds = [], []
    for fold in np.unique(f):
        train, test = f != fold, f == fold
        t = best_threshold(s[train], y[train])
        thresholds.append(t)
        per_fold.append(float(np.mean((s[test] >= t) == y[test])))
    return FoldAccuracy(
        float(np.mean(per_fold)), float(np.std(per_fold)), tuple(per_fold), tuple(thresholds)
    )


def default_folds(same: Sequence[bool], k: int = 10) -> list[int]:
    """Folds for pairs without their own: round-robin within each class, in input order."""
    counters = {True: 0, False: 0}
    out = []
    for flag in same:
        out.append(counters[bool(flag)] % k)
        counters[bool(flag)] += 1
    return out


# -- identification ----------------------------------------------------------------------------
@dataclass(frozen=True)
class MatedOutcome:
    """One mated search: where the first mate came in the candidate list."""

    rank: int | None
    """1-based rank of the first candidate of the right identity; None if none was listed."""
    score: float | None


def mated_outcome(candidates: Sequence[tuple[str, float]], identity: str) -> MatedOutcome:
    """``candidates`` are (identity, score), best first."""
    for rank, (who, score) in enumerate(candidates, start=1):
        if who == identity:
            return MatedOutcome(rank, score)
    return MatedOutcome(None, None)


def top_score(candidates: Sequence[tuple[str, float]]) -> float:
    """A non-mated search's outcome: its best score (-inf when nothing was listed)."""
    return max((s for _, s in candidates), default=-math.inf)


def rank_rate(mated: Sequence[MatedOutcome], k: int) -> float:
    """Fraction of mated searches with a mate within the first ``k`` candidates."""
    return float(np.mean([m.rank is not None and m.rank <= k for m in mated]))


def fnir(mated: Sequence[MatedOutcome], threshold: float, rank_limit: int) -> float:
    return float(np.mean([
        not (m.rank is not None and m.rank <= rank_limit and m.score is not None
             and m.score >= threshold)
        for m in mated
    ]))


def fnir_at_fpir(
    mated: Sequence[MatedOutcome], nonmated: Sequence[float], fpir: float, rank_limit: int
) -> RatePoint:
    t = threshold_at_rate(nonmated, fpir)
    return RatePoint(fpir, t, fnir(mated, t, rank_limit), accept_rate(nonmated, t),
                     fpir * len(nonmated) >= 1)


def det_points(
    mated: Sequence[MatedOutcome], nonmated: Sequence[float], rank_limit: int
) -> list[tuple[float, float, float]]:
    """(threshold, FPIR, FNIR) at every distinct score, for a DET curve."""
    scores = [m.score for m in mated if m.score is not None] + [
        s for s in nonmated if math.isfinite(s)
    ]
    return [
        (float(t), accept_rate(nonmated, float(t)), fnir(mated, float(t), rank_limit))
        for t in np.unique(scores)
    ]


def outcomes_from_matrix(
    scores: np.ndarray,
    gallery: Sequence[str],
    probes: Sequence[str],
    top: int,
) -> tuple[list[MatedOutcome], list[float]]:
    """Mated outcomes and non-mated top scores of a probes x gallery score matrix.

    A probe is mated when its identity is in ``gallery``. Each probe's candidate list is its
    ``top`` best gallery entries (ties broken by gallery order).
    """
    enrolled = set(gallery)
    mated: list[MatedOutcome] = []
    nonmated: list[float] = []
    for row, who in zip(np.asarray(scores, dtype=np.float64), probes, strict=True):
        order = np.argsort(-row, kind="stable")[:top]
        candidates = [(gallery[j], float(row[j])) for j in order]
        if who in enrolled:
            mated.append(mated_outcome(candidates, who))
        else:
            nonmated.append(top_score(candidates))
    return mated, nonmated


def verification_points(
    genuine: Sequence[float], impostor: Sequence[float]
) -> list[tuple[float, float, float]]:
    """(threshold, FMR, FNMR) at every distinct finite score, for a DET curve."""
    g, i = _arr(genuine), _arr(impostor)
    scores = np.unique(np.concatenate([g, i]))
    return [
        (float(t), float(np.mean(i >= t)), float(np.mean(g < t)))
        for t in scores[np.isfinite(scores)]
    ]
