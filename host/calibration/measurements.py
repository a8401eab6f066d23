"""What is measured, in which units, against which limit, and the words for a verdict.

A point's error is judged against a symmetric tolerance limit by the decision rule
(:mod:`.decision`, ILAC-G8:09/2019), which takes the point's expanded uncertainty into
account. Its statements are the four of ILAC-G8's non-binary rule: *pass*, *conditional
pass*, *conditional fail*, *fail*; a binary rule uses only the first and the last. These are
the only verdict words in micropen (the older "marginal" flag is gone: a point close to its
limit is now conditional exactly when its uncertainty interval reaches over the limit).
The tolerances come from ``protocol/limits.py`` so a manufacturer changes them in one place.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum

from micropen.protocol import limits as L

__all__ = [
    "DEPTH_ACCEPTANCE",
    "DEPTH_AS_LEFT",
    "RATE_ACCEPTANCE",
    "RATE_AS_LEFT",
    "Limit",
    "Quantity",
    "Stage",
    "Verdict",
    "worst",
]


class Verdict(StrEnum):
    """A statement of conformity for one point (or, at worst, for a whole stage)."""

    PASS = "pass"
    CONDITIONAL_PASS = "conditional_pass"  # inside the limit, but U reaches over it
    CONDITIONAL_FAIL = "conditional_fail"  # outside the limit, but U reaches back inside
    FAIL = "fail"

    @property
    def passed(self) -> bool:
        """The measured value is inside the limit (a conditional pass is still a pass)."""
        return self in (Verdict.PASS, Verdict.CONDITIONAL_PASS)

    @property
    def conditional(self) -> bool:
        return self in (Verdict.CONDITIONAL_PASS, Verdict.CONDITIONAL_FAIL)

    @property
    def label(self) -> str:
        """As printed: ``conditional pass``."""
        return self.value.replace("_", " ")

    @property
    def severity(self) -> int:
        return _SEVERITY[self]


_SEVERITY = {
    Verdict.PASS: 0,
    Verdict.CONDITIONAL_PASS: 1,
    Verdict.CONDITIONAL_FAIL: 2,
    Verdict.FAIL: 3,
}


class Quantity(StrEnum):
    DEPTH = "depth"
    RATE = "rate"

    @property
    def set_units(self) -> str:
        return "mm" if self is Quantity.DEPTH else "strokes/s"

    @property
    def error_units(self) -> str:
        return "mm" if self is Quantity.DEPTH else "%"

    @property
    def label(self) -> str:
        return "Needle depth" if self is Quantity.DEPTH else "Stroke rate"


class Stage(StrEnum):
    AS_FOUND = "as_found"
    AS_LEFT = "as_left"

    @property
    def label(self) -> str:
        return self.value.replace("_", "-")


@dataclass(frozen=True, slots=True)
class Limit:
    """A symmetric tolerance limit on an error, with its units."""

    name: str
    tolerance: float
    units: str

    def describe(self) -> str:
        return f"±{self.tolerance:g} {self.units} ({self.name})"


DEPTH_ACCEPTANCE = Limit("acceptance", L.DEPTH_ACCEPT_TOL_UM / 1000, "mm")
DEPTH_AS_LEFT = Limit("as-left", L.DEPTH_AS_LEFT_TOL_UM / 1000, "mm")
RATE_ACCEPTANCE = Limit("acceptance", L.RATE_ACCEPT_TOL_PCT, "%")
RATE_AS_LEFT = Limit("as-left", L.RATE_AS_LEFT_TOL_PCT, "%")


def worst(verdicts: Iterable[Verdict]) -> Verdict | None:
    """FAIL beats CONDITIONAL_FAIL beats CONDITIONAL_PASS beats PASS; None for nothing."""
    found = list(verdicts)
    return max(found, key=_SEVERITY.__getitem__) if found else None
