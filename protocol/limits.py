"""The pen's envelope, in one place.

Every number the protocol validates, the simulated firmware enforces and the host checks comes
from here, so a manufacturer changes a limit once. Values marked *assumed* in
``shared/pen-spec.md`` have no public source; they are still named constants, never literals in
code. Depths are integer micrometres on the wire (0.01 mm resolution would waste nothing either,
but micrometres keep gauge readings exact); rates are strokes per second.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum

__all__ = [
    "AREAS",
    "AREAS_BY_NAME",
    "Area",
    "AreaProfile",
    "area_profile",
]

# --- needles and depth -------------------------------------------------------------------
NEEDLE_COUNT = 12
DEPTH_HOME_UM = 0  # retracted
DEPTH_MIN_UM = 200  # shallowest working depth (Dermapen 4)
DEPTH_MAX_UM = 2500  # deepest the reference pen goes (SkinPen, Rejuvapen NXT)
DEPTH_SOFT_CAP_UM = 1500  # deeper needs an explicit, logged override (FDA: not evaluated > 1.5)
DEPTH_WIRE_RESOLUTION_UM = 10  # 0.01 mm on the wire
DEPTH_ACTUATOR_STEP_UM = 50  # actuator step (assumed)
DEPTH_UI_STEP_UM = 100
DEPTH_PRESET_STEP_UM = 250

# --- stroke rate --------------------------------------------------------------------------
RATE_MIN_SPS = 50
RATE_MAX_SPS = 150
RATE_LEVELS_SPS: tuple[int, ...] = (50, 70, 90, 110, 130, 150)  # level 1..6
RATE_DEFAULT_SPS = 110

# --- runs -----------------------------------------------------------------------------------
STROKES_MIN = 1
STROKES_MAX = 1_000_000
RUN_DURATION_MIN_MS = 100
RUN_DURATION_MAX_MS = 30 * 60 * 1000  # a run cannot outlast a cartridge

# --- accuracy ------------------------------------------------------------------------------
DEPTH_AS_LEFT_TOL_UM = 50  # assumed
DEPTH_ACCEPT_TOL_UM = 100
DEPTH_FAULT_TOL_UM = 150  # Exceed K180778
RATE_ACCEPT_TOL_PCT = 5.0  # assumed
RATE_AS_LEFT_TOL_PCT = 2.0

# --- cartridge -------------------------------------------------------------------------------
CARTRIDGE_SHELF_LIFE_DAYS = 2 * 365
CARTRIDGE_LIFE_STROKES = 250_000  # assumed
CARTRIDGE_LIFE_MS = 30 * 60 * 1000  # assumed

# --- watchdog, retract, stall ------------------------------------------------------------------
HEARTBEAT_MIN_MS = 100
HEARTBEAT_MAX_MS = 2000
HEARTBEAT_DEFAULT_MS = 500
RETRACT_MAX_MS = 50  # assumed
STALL_MAX_MS = 100  # assumed
# Stroke-rate drift (hazard 6): off the set rate by more than RATE_ACCEPT_TOL_PCT for this long,
# once the motor has had time to reach speed, stops a treatment run (bench-fixture runs, which
# measure the drift during calibration, are exempt)
RATE_DRIFT_SETTLE_MS = 250  # assumed: the motor's 30 ms lag, settled many times over
RATE_DRIFT_HOLD_MS = 100  # assumed
STALL_CURRENT_MA = 900  # over-current threshold (assumed)

# --- power and thermal ---------------------------------------------------------------------------
BATTERY_NOMINAL_MV = 3700
BATTERY_START_MIN_MV = 3400  # assumed
BATTERY_STOP_MV = 3300  # assumed
TEMP_LIMIT_DC = 410  # handpiece surface, tenths of °C
TEMP_WARN_DC = 400
TEMP_FAULT_DC = 430

# --- telemetry ---------------------------------------------------------------------------------
TELEMETRY_MAX_HZ = 1000
TELEMETRY_DEFAULT_HZ = 0

# --- calibration storage -------------------------------------------------------------------------
CAL_GAIN_PPM_LIMIT = 200_000  # a correction beyond ±20 % means a broken actuator, not drift
CAL_OFFSET_UM_LIMIT = 500

# --- sessions (docs/protocol.md, "Sessions, the reply cache and records")
REPLY_CACHE_SESSIONS = 4  # host sessions whose replies the pen remembers at once
REPLY_CACHE_PER_SESSION = 256  # replies remembered per session
HELD_RECORDS_MAX = 4096  # records the pen holds for the next host session
# of which security events (SECURITY_DENIED, AUTH_FAILURES, UNPAIRED_CONNECT, UNPROVEN_CONNECT)
# at most this many: anyone can provoke them, and they must never crowd out a run or fault report
HELD_SECURITY_EVENTS_MAX = 64


class Area(IntEnum):
    """Treatment areas. The wire carries the number; names are for people."""

    PERIORBITAL = 1
    FOREHEAD = 2
    NOSE_UPPER_LIP = 3
    CHEEKS = 4
    ACNE_SCARS = 5
    NECK = 6
    STRETCH_MARKS = 7
    SCALP = 8
    BENCH_FIXTURE = 9  # calibration on a fixture, never on skin: the device's whole envelope


@dataclass(frozen=True, slots=True)
class AreaProfile:
    """Depth and speed limits for one treatment area (vendor charts, not medical advice)."""

    area: Area
    label: str
    default_um: int
    max_um: int
    override_max_um: int  # reachable only with the soft-cap override; == max_um when none
    levels: tuple[int, int]  # allowed speed levels, inclusive, 1-based

    def __post_init__(self) -> None:
        """Profiles ship as editable data: an edit that breaks their order is refused here,
        not discovered as a wrong limit at the pen."""
        lo, hi = self.levels
        if not 1 <= lo <= hi <= len(RATE_LEVELS_SPS):
            raise ValueError(f"{self.area.name}: speed levels {self.levels} outside 1..6")
        depths = (DEPTH_MIN_UM, self.default_um, self.max_um, self.override_max_um, DEPTH_MAX_UM)
        if list(depths) != sorted(depths):
            raise ValueError(
                f"{self.area.name}: depths must rise: minimum ≤ default ≤ max ≤ override max ≤ "
                f"pen max (µm), got {depths}"
            )

    @property
    def name(self) -> str:
        return self.area.name.lower()

    def allowed_rates(self) -> tuple[int, ...]:
        lo, hi = self.levels
        return RATE_LEVELS_SPS[lo - 1 : hi]

    def depth_limit_um(self, override: bool) -> int:
        return self.override_max_um if override else self.max_um


AREAS: dict[Area, AreaProfile] = {
    p.area: p
    for p in (
        AreaProfile(
            Area.PERIORBITAL, "periorbital (outside the orbital rim only)", 250, 500, 500, (1, 3)
        ),
        AreaProfile(Area.FOREHEAD, "forehead", 500, 750, 750, (1, 3)),
        AreaProfile(Area.NOSE_UPPER_LIP, "nose and upper lip", 250, 750, 750, (1, 2)),
        AreaProfile(Area.CHEEKS, "cheeks", 1000, 1500, 2000, (2, 4)),
        AreaProfile(Area.ACNE_SCARS, "facial acne scars", 1250, 1500, 2000, (1, 3)),
        AreaProfile(Area.NECK, "neck (assumed)", 500, 1000, 1000, (1, 3)),
        AreaProfile(Area.STRETCH_MARKS, "stretch marks (body)", 1500, 2500, 2500, (2, 4)),
        AreaProfile(Area.SCALP, "scalp", 1000, 1500, 2000, (1, 4)),
        # not a treatment area: the bench fixture that calibration needs to reach every speed
        # level (1–6) and the whole depth range; depths above the soft cap still need the
        # logged override
        AreaProfile(
            Area.BENCH_FIXTURE, "bench fixture (calibration only)", 1000, 1500, DEPTH_MAX_UM, (1, 6)
        ),
    )
}
AREAS_BY_NAME: dict[str, AreaProfile] = {p.name: p for p in AREAS.values()}


def area_profile(area: int | str) -> AreaProfile:
    """Look an area up by number or name; raises KeyError listing the valid names."""
    try:
        if isinstance(area, str):
            return AREAS_BY_NAME[area.lower().replace("-", "_")]
        return AREAS[Area(area)]
    except (KeyError, ValueError):
        raise KeyError(
            f"unknown treatment area {area!r}; valid: {', '.join(AREAS_BY_NAME)}"
        ) from None
