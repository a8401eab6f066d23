"""What the technician chose for one calibration, checked before anything touches the pen;
and the method as the certificate names it.

Why its own module: these are the inputs a certificate reports (readings per point, decision
rule, owner, issuer, certificate series) and the checks that refuse bad ones (InvalidInput:
exit 2, nothing sent, nothing recorded); the procedure only reads them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from micropen.host.errors import InvalidInput
from micropen.protocol import limits as L

from .decision import DecisionRule
from .record import Issuer
from .records import DEFAULT_PREFIX

__all__ = [
    "DEPTH_POINTS_MM",
    "INTERVAL_DAYS_MAX",
    "METHODS",
    "METHOD_REVISION",
    "READINGS_DEFAULT",
    "READINGS_MAX",
    "READINGS_MIN",
    "Settings",
]

DEPTH_POINTS_MM = (0.25, 0.5, 1.0, 1.5, 2.0, 2.5)
# Readings per point. The repeatability needs at least two; ten give it nine degrees of
# freedom, so even a point where it dominates the budget is stated at k ≤ 2.32, and on the
# simulator's bench (where it does not) at k = 2. Three, the former default, gave two degrees
# of freedom: k = 4.53 wherever repeatability dominated.
READINGS_DEFAULT = 10
READINGS_MIN, READINGS_MAX = 2, 50
INTERVAL_DAYS_MAX = 5 * 365
_TEXT_MAX = 64
_OWNER_MAX = 200
_PREFIX = re.compile(r"[A-Za-z0-9][A-Za-z0-9-]{0,15}")

# The method as the certificate names it (ISO/IEC 17025 §7.8.2.1 f). The revision changes
# whenever the procedure or its evaluation does; docs/calibration.md keeps the history.
METHODS = {
    "depth": "MP-CAL-D needle depth: as-found, adjustment, as-left by direct comparison",
    "rate": "MP-CAL-R stroke rate: as-found, adjustment, as-left by direct comparison",
    "all": "MP-CAL-A needle depth and stroke rate: as-found, adjustment, as-left by direct "
    "comparison",
    "verify": "MP-VER needle depth and stroke rate: as-found verification by direct comparison",
}
METHOD_REVISION = "2"


@dataclass(frozen=True)
class Settings:
    """What the technician chose; checked before anything touches the pen."""

    technician: str = ""
    station: str = ""
    ambient_c: float | None = None  # None: the idle pen's own temperature is recorded
    interval_days: int = 365
    override_instrument_due: str = ""
    depth_points_mm: tuple[float, ...] = DEPTH_POINTS_MM
    rate_levels_sps: tuple[int, ...] = L.RATE_LEVELS_SPS
    readings: int = READINGS_DEFAULT  # per set point; their mean is the point's value
    retries: int = 2  # retakes of a point after an implausible reading
    settle_timeout_s: float = 3.0
    decision_rule: DecisionRule = field(default_factory=DecisionRule)
    owner: str = ""  # the equipment's owner, for the certificate
    issuer: Issuer = field(default_factory=Issuer)  # the station file's lab and signatory
    certificate_prefix: str = DEFAULT_PREFIX  # the station's certificate number series

    def check(self) -> None:
        """InvalidInput naming the value, the limit and the fix."""
        self._check_counts()
        self._check_texts()
        self.decision_rule.check()
        self._check_points()

    def _check_counts(self) -> None:
        if not 1 <= self.interval_days <= INTERVAL_DAYS_MAX:
            raise InvalidInput(
                f"calibration interval {self.interval_days} days is outside 1–"
                f"{INTERVAL_DAYS_MAX} days; give --interval-days in that range (default 365)"
            )
        if not READINGS_MIN <= self.readings <= READINGS_MAX:
            raise InvalidInput(
                f"readings per point {self.readings} is outside {READINGS_MIN}–{READINGS_MAX}; "
                f"the repeatability needs at least {READINGS_MIN} (default {READINGS_DEFAULT})"
            )
        if self.ambient_c is not None and not -20.0 <= self.ambient_c <= 60.0:
            raise InvalidInput(
                f"ambient temperature {self.ambient_c} °C is outside -20–60 °C; give it in °C"
            )

    def _check_texts(self) -> None:
        for name, text, most in (
            ("technician", self.technician, _TEXT_MAX),
            ("station", self.station, _TEXT_MAX),
            ("owner", self.owner, _OWNER_MAX),
        ):
            if len(text) > most or not text.isprintable():
                raise InvalidInput(
                    f"{name} {text!r} must be printable and at most {most} characters"
                )
        if not _PREFIX.fullmatch(self.certificate_prefix):
            raise InvalidInput(
                f"certificate prefix {self.certificate_prefix!r} must be 1–16 letters, digits or "
                "'-' (station file: station.certificate_prefix)"
            )

    def _check_points(self) -> None:
        for depth in self.depth_points_mm:
            um = round(depth * 1000)
            if not L.DEPTH_MIN_UM <= um <= L.DEPTH_MAX_UM or um % L.DEPTH_WIRE_RESOLUTION_UM:
                raise InvalidInput(
                    f"depth set point {depth} mm is outside {L.DEPTH_MIN_UM / 1000}–"
                    f"{L.DEPTH_MAX_UM / 1000} mm or finer than 0.01 mm"
                )
        if len(set(self.depth_points_mm)) < 2:
            raise InvalidInput("a depth calibration needs at least two distinct set points")
        for rate in self.rate_levels_sps:
            if rate not in L.RATE_LEVELS_SPS:
                raise InvalidInput(
                    f"stroke rate {rate}/s is not a speed level; levels: "
                    f"{', '.join(map(str, L.RATE_LEVELS_SPS))}"
                )
