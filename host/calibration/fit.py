"""The correction maths: least-squares lines and the calibration that cancels what they show.

The pen turns a commanded value ``c`` into an actuator value with its active calibration, and
the unit's manufacturing errors turn that into the physical value the gauge reads. Both steps
are affine, so the reading is a line in ``c``: ``measured = slope * c + intercept``. A matched
calibration makes that line the identity. Given the line measured with the current
calibration, :func:`corrected_depth` and :func:`corrected_rate` compute the calibration that
makes it the identity, without knowing the manufacturing errors themselves.

Firmware convention (sim/physics.py, docs/simulator.md)::

    actuator_depth = commanded * (1 + depth_gain_ppm / 1e6) + depth_offset_um
    actuator_rate  = commanded * (1 + rate_gain_ppm / 1e6)
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from micropen.protocol import limits as L

from .errors import FitError

__all__ = [
    "CalValues",
    "Line",
    "corrected_depth",
    "corrected_rate",
    "fit_line",
    "fit_slope",
]

PPM = 1_000_000


@dataclass(frozen=True, slots=True)
class Line:
    """``y = slope * x + intercept`` with the largest absolute residual of the fit."""

    slope: float
    intercept: float
    max_residual: float = 0.0

    def __call__(self, x: float) -> float:
        return self.slope * x + self.intercept


@dataclass(frozen=True, slots=True)
class CalValues:
    """The three numbers a calibration bank stores (the pen's integer units)."""

    depth_gain_ppm: int = 0
    depth_offset_um: int = 0
    rate_gain_ppm: int = 0

    def check(self) -> None:
        """Refuse values the pen's storage cannot hold: such a unit needs repair, not a fit."""
        for name, value, limit in (
            ("depth gain", self.depth_gain_ppm, L.CAL_GAIN_PPM_LIMIT),
            ("depth offset", self.depth_offset_um, L.CAL_OFFSET_UM_LIMIT),
            ("rate gain", self.rate_gain_ppm, L.CAL_GAIN_PPM_LIMIT),
        ):
            if abs(value) > limit:
                raise FitError(
                    f"{name} correction {value} is beyond the storage limit ±{limit}; "
                    "the unit needs repair (actuator or sensor), not calibration"
                )


def fit_line(xs: Sequence[float], ys: Sequence[float]) -> Line:
    """Ordinary least squares; needs at least two distinct x values."""
    _check_points(xs, ys, minimum=2)
    n = len(xs)
    mx, my = math.fsum(xs) / n, math.fsum(ys) / n
    sxx = math.fsum((x - mx) ** 2 for x in xs)
    if sxx <= 0.0:
        raise FitError(f"all {n} set points are equal ({xs[0]}); a line needs two distinct ones")
    sxy = math.fsum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True))
    slope = sxy / sxx
    intercept = my - slope * mx
    return Line(slope, intercept, _max_residual(xs, ys, slope, intercept))


def fit_slope(xs: Sequence[float], ys: Sequence[float]) -> Line:
    """Least squares through the origin (a pure gain, as the stroke rate has)."""
    _check_points(xs, ys, minimum=1)
    sxx = math.fsum(x * x for x in xs)
    if sxx <= 0.0:
        raise FitError("every set point is zero; a gain needs a non-zero one")
    slope = math.fsum(x * y for x, y in zip(xs, ys, strict=True)) / sxx
    return Line(slope, 0.0, _max_residual(xs, ys, slope, 0.0))


def corrected_depth(current: CalValues, measured_um: Line) -> CalValues:
    """The depth calibration that makes ``measured = commanded`` (both in µm).

    With ``a = 1 + gain`` and ``b = offset`` in force the unit shows
    ``measured = k * (a*c + b) + e`` for its unknown ``k, e``; the fit gives ``slope = k*a`` and
    ``intercept = k*b + e``. Solving ``k * a' = 1`` and ``k * b' + e = 0`` gives
    ``a' = a / slope`` and ``b' = b - intercept * a / slope``.
    """
    if measured_um.slope <= 0.0:
        raise FitError(
            f"measured depth does not rise with the set point (slope {measured_um.slope:.4f}, "
            "must be > 0); check the gauge is on the needle stop and the actuator moves"
        )
    a = 1.0 + current.depth_gain_ppm / PPM
    b = float(current.depth_offset_um)
    new_a = a / measured_um.slope
    new_b = b - measured_um.intercept * a / measured_um.slope
    values = CalValues(round((new_a - 1.0) * PPM), round(new_b), current.rate_gain_ppm)
    values.check()
    return values


def corrected_rate(current: CalValues, measured_sps: Line) -> CalValues:
    """The rate calibration that makes ``measured = commanded``: ``a' = a / slope``."""
    if measured_sps.slope <= 0.0:
        raise FitError(
            f"measured stroke rate does not rise with the set rate (slope "
            f"{measured_sps.slope:.4f}, must be > 0); check the tachometer sees the needles"
        )
    a = 1.0 + current.rate_gain_ppm / PPM
    new_a = a / measured_sps.slope
    values = CalValues(current.depth_gain_ppm, current.depth_offset_um, round((new_a - 1.0) * PPM))
    values.check()
    return values


def _check_points(xs: Sequence[float], ys: Sequence[float], *, minimum: int) -> None:
    if len(xs) != len(ys):
        raise FitError(f"{len(xs)} set points but {len(ys)} readings; they must pair up")
    if len(xs) < minimum:
        raise FitError(f"{len(xs)} points are too few for a fit; at least {minimum} needed")
    if not all(math.isfinite(v) for v in (*xs, *ys)):
        raise FitError("a set point or reading is not a finite number; re-take the reading")


def _max_residual(xs: Sequence[float], ys: Sequence[float], slope: float, b: float) -> float:
    return max(abs(y - (slope * x + b)) for x, y in zip(xs, ys, strict=True))
