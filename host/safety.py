"""The host's own checks of every parameter, before anything is sent.

The pen enforces the same envelope in its firmware; checking here too means a bad value never
reaches the pen, and the user is told the value, the limit, the area and the fix in one line.
Limits come from what the pen reported at handshake (``Identity``) and from the treatment-area
profiles in ``micropen.protocol.limits``.
"""

from __future__ import annotations

import math

from micropen.protocol import limits as L
from micropen.protocol.messages import Identity

from .errors import SafetyLimitError

__all__ = [
    "NOMINAL_PEN",
    "check_area_mode",
    "check_depth",
    "check_rate",
    "check_run",
    "check_treatment_area",
    "resolve_area",
]

# The reference pen's envelope, for checking input before any port is opened. After the
# handshake the host checks again against the limits the pen itself reported.
NOMINAL_PEN = Identity(
    cmd_id=0,
    protocol_version=0,
    schema_hash=0,
    model="reference",
    serial="",
    firmware_major=0,
    firmware_minor=0,
    firmware_patch=0,
    hardware_revision=0,
    needle_count=L.NEEDLE_COUNT,
    capabilities=0,
    depth_min_um=L.DEPTH_MIN_UM,
    depth_max_um=L.DEPTH_MAX_UM,
    soft_cap_um=L.DEPTH_SOFT_CAP_UM,
    rate_min_sps=L.RATE_MIN_SPS,
    rate_max_sps=L.RATE_MAX_SPS,
    boot_id=0,
)


def resolve_area(area: L.Area | str | int) -> L.AreaProfile:
    try:
        return L.area_profile(area)
    except KeyError as exc:
        raise SafetyLimitError(str(exc.args[0])) from None


def check_treatment_area(profile: L.AreaProfile) -> None:
    """A treatment run (the ``run`` command, ``Pen.run``) never uses the bench fixture."""
    if profile.area is L.Area.BENCH_FIXTURE:
        raise SafetyLimitError(
            "bench_fixture is the calibration fixture, never skin: the pen runs there only in "
            "service mode, which micropen calibrate enters and leaves; choose a treatment area "
            f"({', '.join(n for n in L.AREAS_BY_NAME if n != 'bench_fixture')})"
        )


def check_area_mode(profile: L.AreaProfile, in_service: bool) -> None:
    """What the pen enforces, checked from what it reports: the bench fixture only in
    service mode, and in service mode the bench fixture only."""
    if profile.area is L.Area.BENCH_FIXTURE and not in_service:
        check_treatment_area(profile)
    if profile.area is not L.Area.BENCH_FIXTURE and in_service:
        raise SafetyLimitError(
            f"the pen is in service mode (bench fixture only) and refuses a {profile.name} run; "
            "leave service mode first (it ends with the calibration that entered it)"
        )


def _mm(um: int) -> str:
    return f"{um / 1000:.2f} mm"


def check_depth(
    depth_mm: float,
    identity: Identity,
    area: L.AreaProfile | None = None,
    override_reason: str | None = None,
    *,
    run: bool = False,
) -> int:
    """Depth in micrometres, or SafetyLimitError naming the value, the limit and the fix.
    0 retracts the needles: a setting between runs, never a depth to ``run`` at."""
    if not isinstance(depth_mm, int | float) or not math.isfinite(depth_mm):
        raise SafetyLimitError(f"depth {depth_mm!r} is not a number of millimetres")
    if abs(depth_mm) > 1_000:  # far outside any pen: say so before rounding (1e308·1000 = inf)
        raise SafetyLimitError(
            f"depth {depth_mm:g} mm is outside the pen's range {_mm(identity.depth_min_um)}–"
            f"{_mm(identity.depth_max_um)} (0 retracts); choose a depth in that range"
        )
    um = round(depth_mm * 1000)
    if abs(um - depth_mm * 1000) > 1e-6 or um % L.DEPTH_WIRE_RESOLUTION_UM:
        raise SafetyLimitError(
            f"depth {depth_mm} mm is finer than the pen's 0.01 mm resolution; round it"
        )
    if um == L.DEPTH_HOME_UM and not run:
        return um
    if um < identity.depth_min_um or um > identity.depth_max_um:
        raise SafetyLimitError(
            f"depth {_mm(um)} is outside the pen's range {_mm(identity.depth_min_um)}–"
            f"{_mm(identity.depth_max_um)} (0 retracts); choose a depth in that range"
        )
    override = bool(override_reason and override_reason.strip())
    if um > identity.soft_cap_um and not override:
        raise SafetyLimitError(
            f"depth {_mm(um)} is above the {_mm(identity.soft_cap_um)} soft cap; give an "
            "override reason (--override-soft-cap REASON) or choose a shallower depth"
        )
    if area is not None:
        limit = area.depth_limit_um(override)
        if um > limit:
            more = (
                f" ({_mm(area.override_max_um)} with a soft-cap override)"
                if area.override_max_um > area.max_um and not override
                else ""
            )
            raise SafetyLimitError(
                f"depth {_mm(um)} is above the {area.name} maximum {_mm(limit)}{more}; "
                f"choose ≤ {_mm(limit)} or the right treatment area"
            )
    return um


def check_rate(rate_sps: int, identity: Identity, area: L.AreaProfile | None = None) -> int:
    if isinstance(rate_sps, bool) or not isinstance(rate_sps, int):
        raise SafetyLimitError(f"stroke rate {rate_sps!r} is not a whole number of strokes/s")
    if not identity.rate_min_sps <= rate_sps <= identity.rate_max_sps:
        raise SafetyLimitError(
            f"stroke rate {rate_sps}/s is outside the pen's range {identity.rate_min_sps}–"
            f"{identity.rate_max_sps}/s; levels are {', '.join(map(str, L.RATE_LEVELS_SPS))}"
        )
    if area is not None:
        allowed = area.allowed_rates()
        if rate_sps not in allowed:
            lo, hi = area.levels
            raise SafetyLimitError(
                f"stroke rate {rate_sps}/s is not allowed for {area.name} (levels {lo}–{hi}: "
                f"{', '.join(map(str, allowed))}/s); choose one of those"
            )
    return rate_sps


def check_run(strokes: int | None, seconds: float | None) -> tuple[int, int]:
    """(strokes, duration_ms) for a Run: exactly one bound must be given."""
    if (strokes is None) == (seconds is None):
        raise SafetyLimitError("give exactly one of strokes or seconds to bound the run")
    if strokes is not None:
        if isinstance(strokes, bool) or not isinstance(strokes, int):
            raise SafetyLimitError(f"strokes {strokes!r} is not a whole number")
        if not L.STROKES_MIN <= strokes <= L.STROKES_MAX:
            raise SafetyLimitError(
                f"strokes {strokes} is outside {L.STROKES_MIN}–{L.STROKES_MAX:,}; choose a "
                "count in that range"
            )
        return strokes, 0
    assert seconds is not None
    if not isinstance(seconds, int | float) or not math.isfinite(seconds):
        raise SafetyLimitError(f"seconds {seconds!r} is not a number")
    if abs(seconds) > 10 * L.RUN_DURATION_MAX_MS / 1000:  # before rounding (1e308·1000 = inf)
        raise SafetyLimitError(
            f"duration {seconds:g} s is outside {L.RUN_DURATION_MIN_MS / 1000}–"
            f"{L.RUN_DURATION_MAX_MS / 1000:g} s; choose a duration in that range"
        )
    ms = round(seconds * 1000)
    if not L.RUN_DURATION_MIN_MS <= ms <= L.RUN_DURATION_MAX_MS:
        raise SafetyLimitError(
            f"duration {seconds} s is outside {L.RUN_DURATION_MIN_MS / 1000}–"
            f"{L.RUN_DURATION_MAX_MS / 1000:.0f} s; choose a duration in that range"
        )
    return 0, ms
