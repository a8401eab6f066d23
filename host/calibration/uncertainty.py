"""The uncertainty budget of one calibration point (GUM, JCGM 100:2008; EA-4/02 M:2022).

Measurement model — the error the certificate states, from the instrument's indication::

    indicated = mean + δ_ref + δ_res + δ_temp          (instrument units: mm, strokes/s)
    depth error = indicated − set                      (mm)
    rate error  = (indicated / set − 1) · 100          (% of the set rate)

Every δ has expectation 0; each is an input quantity with a standard uncertainty:

============  ====  ============  =========  ===============================================
input         type  distribution  divisor    what it is
============  ====  ============  =========  ===============================================
mean          A     normal        √n         repeatability: s of the n readings, ν = n − 1
δ_ref         B     normal        k (cert.)  the reference instrument's calibration: U/k
                                             from its certificate (:mod:`.traceability`)
δ_res         B     rectangular   √3         its resolution: half a digit, a = r/2
δ_temp        B     rectangular   √3         depth only: thermal expansion of the measured
                                             length L between 20 °C and the ambient
                                             temperature, a = L·α·(|t − 20 °C| + δt)
============  ====  ============  =========  ===============================================

The ``uncertainties`` package propagates the model (first order, exact for this linear one):
it gives each sensitivity coefficient (1 for depth, 100/set %/(strokes/s) for rate), the
combined standard uncertainty u_c and each term's contribution. The effective degrees of
freedom come from the Welch–Satterthwaite formula (GUM G.4.1); the coverage factor k for a
coverage probability of about 95 % (95.45 %) from the t-distribution at ν_eff (GUM table
G.2), so k = 2.00 once ν_eff is large and more when repeatability from few readings
dominates (k = 4.53 at two degrees of freedom).
U = k·u_c is reported rounded *up* to two significant digits (EA-4/02 §5).

Not in the budget, and why: the set point is sent to the pen exactly (an integer number of
micrometres, a speed level), so it has no resolution of its own; the pen's actuator step and
its own noise are what the pen does, so they are in the measured error and its repeatability,
not in the uncertainty of measuring them. The tachometer's temperature effect is inside its
certificate's U over its rated temperature range.
"""

from __future__ import annotations

import itertools
import math
import statistics
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from uncertainties import ufloat  # type: ignore[import-untyped]

from .measurements import Quantity
from .traceability import ReferenceCalibration

__all__ = [
    "ALPHA_PER_K",
    "COVERAGE_TABLE",
    "REFERENCE_TEMPERATURE_C",
    "Ambient",
    "Contribution",
    "PointUncertainty",
    "coverage_factor",
    "evaluate_point",
    "report_decimals",
    "round_up",
    "welch_satterthwaite",
]

REFERENCE_TEMPERATURE_C = 20.0  # ISO 1: the reference temperature of lengths
ALPHA_PER_K = 11.5e-6  # steel (needles, indicator spindle); no compensation is assumed
AMBIENT_BOUND_K = {  # δt: how far the recorded ambient may be from the air at the fixture
    "entered": 1.0,  # a room thermometer read by the technician
    "pen": 3.0,  # the idle pen's handpiece sensor: near, not of, the air
    "none": 10.0,  # nothing recorded: the whole 10–30 °C a bench room may have
}
SQRT3 = math.sqrt(3.0)

# GUM (JCGM 100:2008) table G.2: t_p(ν) for p = 95.45 %, the "k = 2" coverage probability.
# ν_eff is first truncated to an integer (EA-4/02 E.5: never more freedom than there is);
# between rows, k is interpolated linearly in 1/ν, which follows t_p(ν) to within 0.003.
COVERAGE_TABLE: tuple[tuple[float, float], ...] = (
    (1, 13.97), (2, 4.53), (3, 3.31), (4, 2.87), (5, 2.65), (6, 2.52), (7, 2.43),
    (8, 2.37), (9, 2.32), (10, 2.28), (11, 2.25), (12, 2.23), (13, 2.21), (14, 2.20),
    (15, 2.18), (16, 2.17), (17, 2.16), (18, 2.15), (19, 2.14), (20, 2.13), (25, 2.11),
    (30, 2.09), (35, 2.07), (40, 2.06), (45, 2.06), (50, 2.05), (100, 2.025),
    (math.inf, 2.00),
)  # fmt: skip


@dataclass(frozen=True)
class Ambient:
    """The recorded ambient temperature and how it was obtained (a key of AMBIENT_BOUND_K)."""

    celsius: float | None
    source: str  # "entered", "pen" or "none"


@dataclass(frozen=True)
class Contribution:
    """One row of the budget. ``value`` and ``standard`` are in instrument units (mm or
    strokes/s); ``contribution`` = |sensitivity|·standard is in the error's units."""

    key: str  # "repeatability", "reference", "resolution", "temperature"
    source: str  # what it is, for the certificate
    kind: str  # "A" or "B"
    distribution: str  # "normal" or "rectangular"
    value: float  # s, U, or the half-width a
    divisor: float  # √n, k, or √3
    standard: float  # value / divisor
    sensitivity: float  # ∂error/∂input
    contribution: float  # |sensitivity| · standard, error units
    dof: float | None  # degrees of freedom; None: infinite (type B from a bound or a cert)


@dataclass(frozen=True)
class PointUncertainty:
    """The budget of one point and its result: u_c, ν_eff, k and U, all in error units."""

    contributions: tuple[Contribution, ...]
    combined: float  # u_c
    dof_effective: float | None  # None: infinite
    coverage_factor: float  # k
    expanded: float  # U = k·u_c, rounded up to two significant digits
    decimals: int  # the decimal place of U: the error is reported to the same place

    def contribution(self, key: str) -> Contribution | None:
        return next((c for c in self.contributions if c.key == key), None)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PointUncertainty:
        return cls(
            contributions=tuple(Contribution(**c) for c in data["contributions"]),
            combined=data["combined"],
            dof_effective=data["dof_effective"],
            coverage_factor=data["coverage_factor"],
            expanded=data["expanded"],
            decimals=data["decimals"],
        )


@dataclass(frozen=True)
class _Input:
    key: str
    source: str
    kind: str
    distribution: str
    value: float
    divisor: float
    dof: float | None

    @property
    def standard(self) -> float:
        return self.value / self.divisor


def evaluate_point(
    quantity: Quantity,
    set_value: float,
    readings: Sequence[float],
    reference: ReferenceCalibration,
    ambient: Ambient,
) -> tuple[float, PointUncertainty]:
    """The point's error (unrounded, error units) and its uncertainty budget."""
    if len(readings) < 2:
        raise ValueError("the repeatability needs at least two readings")
    mean = math.fsum(readings) / len(readings)
    inputs = _inputs(quantity, readings, mean, reference, ambient)
    with warnings.catch_warnings():  # a zero-width input (identical readings) is legitimate
        warnings.simplefilter("ignore", UserWarning)
        terms = {i.key: ufloat(0.0, i.standard, tag=i.key) for i in inputs}
        indicated = mean + sum(terms.values())
        error = indicated - set_value
        if quantity is Quantity.RATE:
            error = (indicated / set_value - 1.0) * 100.0
        derivatives = {var.tag: d for var, d in error.derivatives.items()}
        combined = float(error.std_dev)
    contributions = tuple(
        Contribution(
            i.key, i.source, i.kind, i.distribution, i.value, i.divisor, i.standard,
            derivatives[i.key], abs(derivatives[i.key]) * i.standard, i.dof,
        )
        for i in inputs
    )  # fmt: skip
    dof = welch_satterthwaite(combined, [(c.contribution, c.dof) for c in contributions])
    k = coverage_factor(dof)
    expanded = round_up(k * combined)
    budget = PointUncertainty(contributions, combined, dof, k, expanded, report_decimals(expanded))
    return float(error.nominal_value), budget


def _inputs(
    quantity: Quantity,
    readings: Sequence[float],
    mean: float,
    reference: ReferenceCalibration,
    ambient: Ambient,
) -> list[_Input]:
    n = len(readings)
    inputs = [
        _Input(
            "repeatability", f"repeatability of the {n} readings (standard deviation of the mean)",
            "A", "normal", statistics.stdev(readings), math.sqrt(n), float(n - 1),
        ),
        _Input(
            "reference", f"reference instrument calibration, certificate {reference.certificate}",
            "B", "normal", reference.expanded_at(mean), reference.coverage_factor, None,
        ),
        _Input(
            "resolution", "reference instrument resolution (half a digit)",
            "B", "rectangular", reference.resolution / 2, SQRT3, None,
        ),
    ]  # fmt: skip
    if quantity is Quantity.DEPTH:
        inputs.append(_temperature(mean, ambient))
    return inputs


def _temperature(length_mm: float, ambient: Ambient) -> _Input:
    bound = AMBIENT_BOUND_K.get(ambient.source, AMBIENT_BOUND_K["none"])
    offset = abs(ambient.celsius - REFERENCE_TEMPERATURE_C) if ambient.celsius is not None else 0.0
    half_width = abs(length_mm) * ALPHA_PER_K * (offset + bound)
    return _Input(
        "temperature",
        f"thermal expansion of the measured length, {REFERENCE_TEMPERATURE_C:g} °C to ambient",
        "B",
        "rectangular",
        half_width,
        SQRT3,
        None,
    )


def welch_satterthwaite(
    combined: float, terms: Sequence[tuple[float, float | None]]
) -> float | None:
    """ν_eff = u_c⁴ / Σ uᵢ⁴/νᵢ over the terms with finite ν (GUM G.4.1); None: infinite."""
    denominator = math.fsum(u**4 / dof for u, dof in terms if dof is not None and dof > 0)
    if denominator <= 0.0 or combined <= 0.0:
        return None
    return combined**4 / denominator


def coverage_factor(dof: float | None) -> float:
    """k for a coverage probability of about 95 % (95.45 %) at ``dof`` degrees of freedom
    (None: infinite), from GUM table G.2; rounded half up to the two decimals printed."""
    if dof is None or math.isinf(dof):
        return COVERAGE_TABLE[-1][1]
    nu = max(1, math.floor(dof))
    for (lo, k_lo), (hi, k_hi) in itertools.pairwise(COVERAGE_TABLE):
        if lo <= nu < hi:
            weight = (1 / lo - 1 / nu) / (1 / lo - (0.0 if math.isinf(hi) else 1 / hi))
            return math.floor((k_lo + (k_hi - k_lo) * weight) * 100 + 0.5 + 1e-9) / 100
    return COVERAGE_TABLE[-1][1]


def round_up(value: float, digits: int = 2) -> float:
    """``value`` rounded up to ``digits`` significant digits (EA-4/02: U is never rounded
    down by more than the rounding can justify; up is always safe)."""
    if value <= 0.0 or not math.isfinite(value):
        return value
    place = digits - 1 - math.floor(math.log10(value))
    scale = 10.0**place
    return math.ceil(value * scale - 1e-9) / scale


def report_decimals(expanded: float, digits: int = 2) -> int:
    """Decimal places that show ``expanded`` to ``digits`` significant digits (≥ 0)."""
    if expanded <= 0.0 or not math.isfinite(expanded):
        return 3
    return max(0, digits - 1 - math.floor(math.log10(expanded)))
