"""Score calibration: what a score means as a false-match rate, for one model.

A calibration is measured from genuine and impostor comparisons (``facetrail calibrate``) and
kept in the store next to the model's identity. It maps a score ``s`` to an estimate of the
false-match rate ``FMR(s)``, the fraction of impostor comparisons scoring ``>= s``, that errs
on the safe side (``bound = "upper95"``, schema 2):

- Where at least ``MIN_TAIL_COUNT`` impostor comparisons score at or above ``s`` (on a 0.01
  score grid, rounded down), the estimate is the one-sided 95 % upper confidence bound
  (Wilson) of the empirical rate, not the rate itself.
- Above that, the data cannot resolve the rate. The estimate is continued by a normal
  distribution fitted to the **tail** of the impostor scores (the highest 2 %: a straight line
  through the scores against their normal quantiles), with its spread at the 95 % upper bound
  of the fit's slope and never under the spread of all impostor scores, anchored to the bound
  at the last resolved point, and flagged ``extrapolated``. A normal fitted to all impostor
  scores understates the tail of real face models (their highest impostor scores come from
  look-alike pairs of identities); one fitted to the tail follows how the tail itself falls.
  It is an estimate, not a measurement: the shipped calibrations were checked on identities
  they never saw (docs/calibration.md).

Calibrations of schema 1 (point estimates, a normal tail) are still read and used as they are.

A search over ``N`` gallery faces compares the probe with each of them, so the expected number
of false candidates at a score is about ``N x FMR(score)``, and the chance that a search of a
person who is not in the gallery returns anyone (FPIR) is at most that. The default threshold
keeps ``N x FMR(threshold) <= fpir_target`` (docs/calibration.md).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields
from functools import cached_property
from importlib import resources
from statistics import NormalDist

import numpy as np

SCHEMA = "facetrail.calibration/2"
SCHEMAS = ("facetrail.calibration/1", SCHEMA)
GRID_STEP = 0.01
GRID_LOW, GRID_HIGH = -1.0, 1.2
MIN_TAIL_COUNT = 10
"""Impostor comparisons needed at or above a score for its empirical FMR to be used."""
Z_95 = 1.6449
"""One-sided 95 % normal quantile."""
TAIL_FRACTION = 0.02
"""The tail normal is fitted to this fraction of the highest impostor scores (at least
``TAIL_MIN`` of them)."""
TAIL_MIN = 50
SHIPPED = "calibrations"
"""Package folder of the calibrations shipped for the shipped models, one file per model."""


@dataclass(frozen=True)
class FmrEstimate:
    fmr: float
    extrapolated: bool
    """True when the rate is beyond what the calibration data can resolve."""


@dataclass(frozen=True)
class Calibration:
    model: str
    """Key of the model whose scores this describes (``ModelInfo.key``)."""
    source: str
    """Where the comparisons came from, in words."""
    genuine: int
    impostor: int
    identities: int
    grid: tuple[float, ...]
    """Scores, ascending, every ``GRID_STEP``."""
    impostor_counts: tuple[int, ...]
    """Impostor comparisons scoring >= each grid score."""
    genuine_counts: tuple[int, ...]
    """Genuine comparisons scoring >= each grid score."""
    impostor_mean: float
    impostor_std: float
    created_at: str
    bound: str = "point"
    """'upper95' (schema 2: confidence bounds, a tail-fitted normal) or 'point' (schema 1)."""
    tail_mean: float | None = None
    """Mean of the normal fitted to the impostor tail (schema 2)."""
    tail_std: float | None = None
    """Its standard deviation, at the 95 % upper bound of the fit."""
    tail_count: int = 0
    """Impostor scores the tail was fitted to."""

    # -- building -----------------------------------------------------------------------------
    @classmethod
    def fit(
        cls,
        genuine: Sequence[float],
        impostor: Sequence[float],
        *,
        model: str,
        source: str,
        identities: int,
        created_at: str,
    ) -> Calibration:
        g = np.asarray(genuine, dtype=np.float64)
        i = np.asarray(impostor, dtype=np.float64)
        if len(i) < 2 or len(g) < 1:
            raise ValueError("calibration needs genuine and at least two impostor comparisons")
        grid = np.round(np.arange(GRID_LOW, GRID_HIGH + GRID_STEP / 2, GRID_STEP), 2)
        tail_mean, tail_std, count = _tail_normal(i)
        if tail_std is not None:
            # Never a faster fall than the normal of all impostor scores would give.
            tail_std = max(tail_std, float(i.std(ddof=1)))
        return cls(
            model=model, source=source, genuine=len(g), impostor=len(i), identities=identities,
            grid=tuple(float(x) for x in grid),
            impostor_counts=tuple(int(c) for c in _counts_at_or_above(i, grid)),
            genuine_counts=tuple(int(c) for c in _counts_at_or_above(g, grid)),
            impostor_mean=float(i.mean()), impostor_std=float(i.std(ddof=1)),
            created_at=created_at, bound="upper95", tail_mean=tail_mean, tail_std=tail_std,
            tail_count=count,
        )

    # -- reading ------------------------------------------------------------------------------
    def fmr_at(self, score: float) -> FmrEstimate:
        """Estimated FMR of a comparison scoring ``score``."""
        k = self._grid_index(score)
        if k < 0:
            return FmrEstimate(1.0, False)
        anchor = self._anchor
        if k <= anchor:
            return FmrEstimate(self._rate(self.impostor_counts[k]), False)
        base = self._rate(self.impostor_counts[anchor])
        mean, std = self.impostor_mean, self.impostor_std
        if self.bound == "upper95" and self.tail_mean is not None and self.tail_std:
            mean, std = self.tail_mean, self.tail_std
        ratio = _normal_sf(score, mean, std) / max(_normal_sf(self.grid[anchor], mean, std),
                                                   1e-300)
        return FmrEstimate(min(base, base * ratio), True)

    def _rate(self, count: int) -> float:
        """The FMR estimate of ``count`` impostors out of ``impostor``: the rate itself
        (schema 1) or its one-sided 95 % upper Wilson bound (schema 2)."""
        n = self.impostor
        p = count / n
        if self.bound != "upper95":
            return p
        z2 = Z_95 * Z_95
        centre = p + z2 / (2 * n)
        spread = Z_95 * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n))
        return min(1.0, (centre + spread) / (1 + z2 / n))

    def tar_at(self, score: float) -> float:
        """Fraction of genuine comparisons at or above ``score`` (on the grid, rounded down)."""
        k = self._grid_index(score)
        return 1.0 if k < 0 else self.genuine_counts[k] / self.genuine

    def threshold_for_fmr(self, target: float) -> float:
        """The lowest score (to 0.001) whose estimated FMR is at most ``target``.

        FMR falls as the score rises, so a bisection finds it."""
        low, high = round(GRID_LOW * 1000), round(GRID_HIGH * 1000)
        if self.fmr_at(high / 1000).fmr > target:
            return GRID_HIGH
        while high - low > 1:
            mid = (low + high) // 2
            if self.fmr_at(mid / 1000).fmr <= target:
                high = mid
            else:
                low = mid
        return high / 1000

    def threshold_for_gallery(self, gallery_faces: int, fpir_target: float) -> float:
        """The threshold that keeps ``gallery_faces x FMR`` at most ``fpir_target``."""
        return self.threshold_for_fmr(fpir_target / max(1, gallery_faces))

    @property
    def resolution(self) -> float:
        """The lowest FMR measured rather than extrapolated (its upper bound, schema 2)."""
        return self._rate(self.impostor_counts[self._anchor])

    def _grid_index(self, score: float) -> int:
        k = math.floor((score - GRID_LOW) / GRID_STEP + 1e-9)
        return min(k, len(self.grid) - 1)

    @cached_property
    def _anchor(self) -> int:
        return self._last_resolved()

    def _last_resolved(self) -> int:
        resolved = [k for k, c in enumerate(self.impostor_counts) if c >= MIN_TAIL_COUNT]
        return resolved[-1] if resolved else 0

    # -- serialising ----------------------------------------------------------------------------
    def to_json(self) -> str:
        return json.dumps({"schema": SCHEMA, **asdict(self)}, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> Calibration:
        data = json.loads(text)
        if data.pop("schema", None) not in SCHEMAS:
            raise ValueError(f"not a {SCHEMA} document")
        for key in ("grid", "impostor_counts", "genuine_counts"):
            data[key] = tuple(data[key])
        known = {f.name for f in fields(cls)}
        # Fields of a tail model this version does not use (an earlier schema-2 build's
        # exponential tail) are left out: the point at which the tail starts still holds.
        return cls(**{k: v for k, v in data.items() if k in known})


def shipped_default(model_key: str) -> Calibration | None:
    """The calibration shipped with facetrail for the model whose key is ``model_key``."""
    for entry in resources.files("facetrail").joinpath(SHIPPED).iterdir():
        if entry.name.endswith(".json"):
            calibration = Calibration.from_json(entry.read_text())
            if calibration.model == model_key:
                return calibration
    return None


def _counts_at_or_above(values: np.ndarray, grid: np.ndarray) -> np.ndarray:
    ordered = np.sort(values)
    # Scores are compared after rounding to 4 decimals, as search reports them.
    return len(ordered) - np.searchsorted(ordered, grid - 1e-9, side="left")


def _tail_normal(impostor: np.ndarray) -> tuple[float | None, float | None, int]:
    """(mean, std, count): the normal whose upper tail runs through the highest impostor
    scores, with its std at the 95 % upper bound of the fit.

    The ``count`` highest scores, against the normal quantiles of their empirical survival
    rates (plotting positions ``(rank - 0.5) / n``), lie on a line ``score = mean + std x z``
    when the tail is normal; least squares gives both, and the standard error of the slope
    bounds ``std`` from above (a steeper fall of the rate would be the optimistic error)."""
    n = len(impostor)
    m = max(TAIL_MIN, int(n * TAIL_FRACTION))
    if n < 2 * m:
        return None, None, 0
    top = np.sort(impostor)[::-1][:m]
    z = np.array([NormalDist().inv_cdf(1 - (k + 0.5) / n) for k in range(m)])
    slope, intercept = np.polyfit(z, top, 1)
    if slope <= 0:
        return None, None, 0
    residual = top - (intercept + slope * z)
    se = math.sqrt(float(residual @ residual) / (m - 2) / float(((z - z.mean()) ** 2).sum()))
    return float(intercept), float(slope + Z_95 * se), m


def _normal_sf(x: float, mean: float, std: float) -> float:
    return 0.5 * math.erfc((x - mean) / (std * math.sqrt(2)))


# -- in words, for people who read results -----------------------------------------------------
def _one_in(rate: float) -> str:
    """``1/rate`` to two significant figures, with thousands separators: '160,000'."""
    n = 1 / rate
    digits = max(0, math.floor(math.log10(n)) - 1)
    return f"{round(n, -digits):,.0f}"


def rate_in_words(fmr: float, extrapolated: bool, resolution: float | None) -> str:
    """What an estimated false-match rate says of a score: 'about 1 in 160,000 unrelated
    faces score this high'. Below ``resolution`` (the lowest rate the calibration measured) the
    rate is only bounded: 'fewer than 1 in N ... (beyond what was measured)'."""
    if (extrapolated or (resolution and fmr < resolution)) and resolution:
        return (f"fewer than 1 in {_one_in(resolution)} unrelated faces score this high "
                "(beyond what was measured)")
    if fmr >= 0.5:
        return "half or more of unrelated faces score this high"
    return f"about 1 in {_one_in(fmr)} unrelated faces score this high"


def beyond_measured(expected: float, gallery_faces: int, resolution: float | None) -> bool:
    """Whether ``expected`` (gallery faces x FMR at a score) rests on a rate below the lowest
    the calibration measured: then it is only bounded."""
    return bool(resolution and gallery_faces and expected / gallery_faces < resolution)


def expected_in_words(expected: float, extrapolated: bool, resolution: float | None,
                      gallery_faces: int) -> str:
    """What ``gallery_faces x FMR`` says: how often a search of this gallery shows an unrelated
    face at this score ('about 1 search in 300 ...'), or how many it shows ('about 3 ...')."""
    bounded = bool(extrapolated and resolution)
    if bounded and resolution:
        expected = gallery_faces * resolution
    if expected >= 0.95:
        count = f"{expected:.2g}" if expected < 10 else f"{round(expected):,}"
        return (f"{'up to' if bounded else 'about'} {count} unrelated faces in this gallery "
                "are expected to score this high")
    if expected <= 0:
        return "no unrelated face in this gallery is expected to score this high"
    return (f"{'fewer than' if bounded else 'about'} 1 search in {_one_in(expected)} of this "
            "gallery would show an unrelated face scoring this high"
            + (" (beyond what was measured)" if bounded else ""))
