"""What a reference instrument's own calibration certificate says: the link to SI units.

A calibration is traceable only through its reference instruments: each was itself
calibrated by a laboratory that states, on a certificate with a number and a date, the
expanded uncertainty of its readings and the coverage factor. Those numbers are the first
contribution to this calibration's uncertainty budget (:mod:`.uncertainty`), and the
certificate number and date go onto this calibration's certificate.

Where the numbers come from, first match wins:

1. the station file's equipment register (``[[instrument]]`` by serial number) — the lab's
   own record of its equipment, the authority for real instruments;
2. the instrument's own declaration: the simulator's bench instruments (``--gauge sim``, or
   a SCPI bench answering ``*IDN?`` with the simulator's manufacturer) declare theirs below;
3. for ``--gauge manual``, the technician types them in from the instrument's certificate.

An instrument with none of these is refused before the pen is touched: without its
uncertainty no uncertainty can be stated, and a certificate without one is not a calibration
certificate (ISO/IEC 17025 §7.8.4.1 a).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from datetime import date, timedelta
from typing import Any

from micropen.host.errors import InvalidInput

__all__ = [
    "SIMULATOR_MANUFACTURERS",
    "ReferenceCalibration",
    "is_simulated_instrument",
    "simulated_calibration",
    "traceability_statement",
]

# the names the simulator's instruments give themselves (sim/bench.py, sim/bench_server.py)
SIMULATOR_MANUFACTURERS = ("micropen simulator", "micropen-sim")


@dataclass(frozen=True)
class ReferenceCalibration:
    """A reference instrument's calibration as its certificate states it.

    The expanded uncertainty is ``expanded + expanded_relative · |reading|`` (the usual
    "U = a + b·L" form) at coverage factor ``coverage_factor``; both parts are in the
    instrument's units (mm or strokes/s; the relative part is a fraction, 0.0003 = 0.03 %).
    """

    certificate: str  # the instrument certificate's number
    calibrated_on: date  # its date of calibration
    calibrated_by: str  # the laboratory that issued it: the next link of the chain
    expanded: float  # U, fixed part, instrument units
    coverage_factor: float  # k of that U
    resolution: float  # the smallest step the instrument shows, instrument units
    expanded_relative: float = 0.0  # U, part proportional to the reading (fraction)

    def check(self, what: str) -> None:
        """InvalidInput naming the value and its limit."""
        if not self.certificate.strip():
            raise InvalidInput(f"{what}: the calibration certificate number is empty")
        for name, value, low in (
            ("expanded uncertainty", self.expanded, 0.0),
            ("relative expanded uncertainty", self.expanded_relative, 0.0),
            ("coverage factor", self.coverage_factor, 1.0),
            ("resolution", self.resolution, 0.0),
        ):
            if not math.isfinite(value) or value < low or (name == "resolution" and value <= 0):
                raise InvalidInput(
                    f"{what}: {name} {value} must be a number "
                    + ("> 0" if name == "resolution" else f"≥ {low:g}")
                    + " (copy it from the instrument's calibration certificate)"
                )
        if self.expanded == 0 and self.expanded_relative == 0:
            raise InvalidInput(
                f"{what}: the expanded uncertainty is zero; copy U (and k) from the instrument's "
                "calibration certificate"
            )

    def expanded_at(self, reading: float) -> float:
        """U of one reading, in instrument units, at the certificate's coverage factor."""
        return self.expanded + self.expanded_relative * abs(reading)

    def standard_at(self, reading: float) -> float:
        """Standard uncertainty u = U / k (GUM 4.3.3: a normal distribution is assumed)."""
        return self.expanded_at(reading) / self.coverage_factor

    def describe(self, units: str, *, label: bool = True) -> str:
        """``U = 0.003 mm + 0.02 % of reading (k = 2)`` (without ``U = `` when not label)."""
        parts = []
        if self.expanded:
            parts.append(f"{self.expanded:g} {units}".rstrip())
        if self.expanded_relative:
            parts.append(f"{self.expanded_relative * 100:g} % of reading")
        text = f"{' + '.join(parts)} (k = {self.coverage_factor:g})"
        return f"U = {text}" if label else text

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["calibrated_on"] = self.calibrated_on.isoformat()
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ReferenceCalibration:
        return cls(**{**data, "calibrated_on": date.fromisoformat(data["calibrated_on"])})


def is_simulated_instrument(manufacturer: str) -> bool:
    return manufacturer.strip().lower() in SIMULATOR_MANUFACTURERS


# --- the simulator's bench declares its instruments' calibration ----------------------------------
# sim/bench.py: the gauge reads to 0.001 mm (noise 0.0015 mm, 1 sigma), the tachometer to
# 0.01 strokes/s (noise 0.05 % of reading). The declared U is that of a good instrument of the
# kind — a 0.001 mm indicator is good to about ±0.003 mm — and is not derived from the noise,
# which the repeatability term measures. tests/calibration/test_uncertainty.py checks the
# resolutions against sim/bench.py so the two cannot drift apart.
_SIMULATED: dict[str, tuple[float, float, float]] = {
    # model: (U fixed part, U relative part, resolution), k = 2
    "SIM-DG-1": (0.003, 0.0, 0.001),  # mm
    "SIM-TA-1": (0.0, 0.0003, 0.01),  # strokes/s; U = 0.03 % of reading
}
_SIM_INTERVAL_DAYS = 365


def simulated_calibration(model: str, serial: str, due: date) -> ReferenceCalibration | None:
    """The declared calibration of one of the simulator's instruments (None for others)."""
    declared = _SIMULATED.get(model.strip())
    if declared is None:
        return None
    fixed, relative, resolution = declared
    return ReferenceCalibration(
        certificate=f"SIM-{serial}",
        calibrated_on=due - timedelta(days=_SIM_INTERVAL_DAYS),
        calibrated_by="none: simulated instrument (declared values)",
        expanded=fixed,
        coverage_factor=2.0,
        resolution=resolution,
        expanded_relative=relative,
    )


def traceability_statement(simulated: bool) -> str:
    """The §7.8.4.1 c) statement of how the results are metrologically traceable."""
    if simulated:
        return (
            "No traceability: the reference instruments or the unit are simulated. The values "
            "declared for the simulated instruments stand in for calibration certificates so "
            "that the procedure and this certificate can be exercised; they trace to nothing."
        )
    return (
        "The results are metrologically traceable to the International System of Units (SI) "
        "through the reference instruments listed, each calibrated by the laboratory named on "
        "its own certificate (number and date listed), whose uncertainty is included in the "
        "uncertainty stated here."
    )
