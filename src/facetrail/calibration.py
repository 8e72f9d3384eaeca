"""Score calibration: what a score means as a false-match rate, for one model.

A calibration is measured from genuine and impostor comparisons (``facetrail calibrate``) and
kept in the store next to the model's identity. It maps a score ``s`` to an estimate of the
false-match rate ``FMR(s)``, the fraction of impostor comparisons scoring ``>= s``, that errs
on the safe side (``bound = "upper95"``, schema 2):

- Where at least ``MIN_TAIL_COUNT`` impostor comparisons score at or above ``s`` (on a 0.01
  score grid, rounded down), the estimate is the one-sided 95 % upper confidence bound
  (Wilson) of the empirical rate, not the rate itself.
- Above that, the data cannot resolve the rate. The estimate is continued by an exponential
  tail fitted to the impostor scores above their 99th percentile (peaks over a threshold),
  with its scale at the 95 % upper bound, anchored to the bound at the last resolved point,
  and flagged ``extrapolated``. Impostor score tails of face models fall faster than an
  exponential (closer to a normal), so this overstates far-tail rates: thresholds come out
  higher than a point estimate would put them. It is an estimate, not a measurement.

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
from dataclasses import asdict, dataclass
from functools import cached_property
from importlib import resources

import numpy as np

SCHEMA = "facetrail.calibration/2"
SCHEMAS = ("facetrail.calibration/1", SCHEMA)
GRID_STEP = 0.01
GRID_LOW, GRID_HIGH = -1.0, 1.2
MIN_TAIL_COUNT = 10
"""Impostor comparisons needed at or above a score for its empirical FMR to be used."""
Z_95 = 1.6449
"""One-sided 95 % normal quantile."""
TAIL_QUANTILE = 0.99
"""The exponential tail is fitted to impostor scores above this quantile (at least
``MIN_TAIL_COUNT`` of them)."""
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
    """'upper95' (schema 2: confidence bounds, an exponential tail) or 'point' (schema 1)."""
    tail_scale: float | None = None
    """Upper-bounded scale of the exponential impostor tail (schema 2)."""
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
        scale, count = _tail_scale(i)
        return cls(
            model=model, source=source, genuine=len(g), impostor=len(i), identities=identities,
            grid=tuple(float(x) for x in grid),
            impostor_counts=tuple(int(c) for c in _counts_at_or_above(i, grid)),
            genuine_counts=tuple(int(c) for c in _counts_at_or_above(g, grid)),
            impostor_mean=float(i.mean()), impostor_std=float(i.std(ddof=1)),
            created_at=created_at, bound="upper95", tail_scale=scale, tail_count=count,
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
        if self.bound == "upper95" and self.tail_scale:
            ratio = math.exp(-(score - self.grid[anchor]) / self.tail_scale)
        else:
            ratio = _normal_sf(score, self.impostor_mean, self.impostor_std) / max(
                _normal_sf(self.grid[anchor], self.impostor_mean, self.impostor_std), 1e-300
            )
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
        return cls(**data)


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


def _tail_scale(impostor: np.ndarray) -> tuple[float | None, int]:
    """(scale, count): the 95 % upper bound of the mean excess of the impostor scores over
    their ``TAIL_QUANTILE`` quantile (the exponential tail's scale), and how many there were.

    For ``m`` exceedances with mean excess ``x``, ``2 m x / scale`` is chi-squared with ``2m``
    degrees of freedom, so ``2 m x / chi2_0.05(2m)`` bounds the scale from above."""
    ordered = np.sort(impostor)
    m = max(MIN_TAIL_COUNT, int(len(ordered) * (1 - TAIL_QUANTILE)))
    if len(ordered) <= m:
        return None, 0
    u = ordered[-m - 1]
    excess = float((ordered[-m:] - u).mean())
    if excess <= 0:
        return None, 0
    return 2 * m * excess / _chi2_quantile(0.05, 2 * m), m


def _chi2_quantile(p: float, k: int) -> float:
    """Wilson-Hilferty approximation of the chi-squared quantile (p = 0.05 only here)."""
    z = -Z_95 if p == 0.05 else Z_95
    h = 2 / (9 * k)
    return k * (1 - h + z * math.sqrt(h)) ** 3


def _normal_sf(x: float, mean: float, std: float) -> float:
    return 0.5 * math.erfc((x - mean) / (std * math.sqrt(2)))
