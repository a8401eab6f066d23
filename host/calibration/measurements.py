"""Measurements with limits, units and marginal bands, as OpenHTF declares them.

A point's error is judged against a symmetric tolerance: inside it passes, inside but beyond
``marginal_fraction`` of it is *marginal* (passes, flagged for attention), outside fails. The
tolerances come from ``protocol/limits.py`` so a manufacturer changes them in one place.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum

from micropen.protocol import limits as L

__all__ = [
    "DEPTH_ACCEPTANCE",
    "DEPTH_AS_LEFT",
    "MARGINAL_FRACTION",
    "RATE_ACCEPTANCE",
    "RATE_AS_LEFT",
    "Limit",
    "Quantity",
    "Stage",
    "Verdict",
    "worst",
]

MARGINAL_FRACTION = 0.8  # within the limit but beyond 80 % of it: flagged


class Verdict(StrEnum):
    PASS = "pass"
    MARGINAL = "marginal"  # passes, but close to the limit
    FAIL = "fail"

    @property
    def passed(self) -> bool:
        return self is not Verdict.FAIL


class Quantity(StrEnum):
    DEPTH = "depth"
    RATE = "rate"

    @property
    def set_units(self) -> str:
        return "mm" if self is Quantity.DEPTH else "strokes/s"

    @property
    def error_units(self) -> str:
        return "mm" if self is Quantity.DEPTH else "%"


class Stage(StrEnum):
    AS_FOUND = "as_found"
    AS_LEFT = "as_left"


@dataclass(frozen=True, slots=True)
class Limit:
    """A symmetric tolerance on an error, with its units and marginal band."""

    name: str
    tolerance: float
    units: str
    marginal_fraction: float = MARGINAL_FRACTION

    def verdict(self, error: float) -> Verdict:
        """PASS, MARGINAL or FAIL; a non-finite error always fails."""
        if not math.isfinite(error) or abs(error) > self.tolerance + 1e-12:
            return Verdict.FAIL
        if abs(error) > self.marginal_fraction * self.tolerance + 1e-12:
            return Verdict.MARGINAL
        return Verdict.PASS

    def describe(self) -> str:
        return f"±{self.tolerance:g} {self.units} ({self.name})"


DEPTH_ACCEPTANCE = Limit("acceptance", L.DEPTH_ACCEPT_TOL_UM / 1000, "mm")
DEPTH_AS_LEFT = Limit("as-left", L.DEPTH_AS_LEFT_TOL_UM / 1000, "mm")
RATE_ACCEPTANCE = Limit("acceptance", L.RATE_ACCEPT_TOL_PCT, "%")
RATE_AS_LEFT = Limit("as-left", L.RATE_AS_LEFT_TOL_PCT, "%")


def worst(verdicts: Iterable[Verdict]) -> Verdict | None:
    """FAIL beats MARGINAL beats PASS; None when there is nothing to judge."""
    order = {Verdict.PASS: 0, Verdict.MARGINAL: 1, Verdict.FAIL: 2}
    found = list(verdicts)
    return max(found, key=order.__getitem__) if found else None
