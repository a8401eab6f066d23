"""The spec's numbers, stated literally (../shared/pen-spec.md), against the constants the code
uses. A constant drifting from the spec (250,000 → 260,000 strokes, 30 → 31 min, 50 → 500 ms)
fails here even where a behaviour test compares against the constant itself.
"""

from __future__ import annotations

import pytest

from micropen.protocol import limits as L

A = L.Area

SPEC = {
    "NEEDLE_COUNT": 12,
    "DEPTH_MIN_UM": 200,  # 0.20 mm
    "DEPTH_MAX_UM": 2500,  # 2.50 mm
    "DEPTH_SOFT_CAP_UM": 1500,  # 1.50 mm
    "DEPTH_WIRE_RESOLUTION_UM": 10,  # 0.01 mm
    "DEPTH_AS_LEFT_TOL_UM": 50,  # ±0.05 mm
    "DEPTH_ACCEPT_TOL_UM": 100,  # ±0.10 mm
    "DEPTH_FAULT_TOL_UM": 150,  # ±0.15 mm
    "RATE_MIN_SPS": 50,
    "RATE_MAX_SPS": 150,
    "RATE_LEVELS_SPS": (50, 70, 90, 110, 130, 150),
    "RATE_DEFAULT_SPS": 110,
    "RATE_ACCEPT_TOL_PCT": 5.0,
    "RATE_AS_LEFT_TOL_PCT": 2.0,
    "STROKES_MIN": 1,
    "STROKES_MAX": 1_000_000,
    "CARTRIDGE_SHELF_LIFE_DAYS": 730,  # 2 years
    "CARTRIDGE_LIFE_STROKES": 250_000,
    "CARTRIDGE_LIFE_MS": 1_800_000,  # 30 min
    "HEARTBEAT_MIN_MS": 100,
    "HEARTBEAT_MAX_MS": 2000,
    "HEARTBEAT_DEFAULT_MS": 500,
    "RETRACT_MAX_MS": 50,
    "STALL_MAX_MS": 100,
    "BATTERY_NOMINAL_MV": 3700,  # 3.7 V
    "BATTERY_START_MIN_MV": 3400,  # refuse to start below 3.4 V
    "BATTERY_STOP_MV": 3300,  # stop below 3.3 V
    "TEMP_LIMIT_DC": 410,  # surface ≤ 41 °C
    "TEMP_WARN_DC": 400,  # warn at 40 °C
    "TEMP_FAULT_DC": 430,  # fault at 43 °C
}


@pytest.mark.parametrize("name", sorted(SPEC))
def test_constant_states_the_spec(name: str) -> None:
    assert getattr(L, name) == SPEC[name]


# area: (default mm, hard max mm, max with override mm, speed levels)
AREAS = {
    A.PERIORBITAL: (0.25, 0.50, 0.50, (1, 3)),
    A.FOREHEAD: (0.50, 0.75, 0.75, (1, 3)),
    A.NOSE_UPPER_LIP: (0.25, 0.75, 0.75, (1, 2)),
    A.CHEEKS: (1.00, 1.50, 2.00, (2, 4)),
    A.ACNE_SCARS: (1.25, 1.50, 2.00, (1, 3)),
    A.NECK: (0.50, 1.00, 1.00, (1, 3)),
    A.STRETCH_MARKS: (1.50, 2.50, 2.50, (2, 4)),
    A.SCALP: (1.00, 1.50, 2.00, (1, 4)),
}


@pytest.mark.parametrize("area", sorted(AREAS), ids=lambda a: a.name.lower())
def test_area_profile_states_the_spec(area: L.Area) -> None:
    default, hard, override, levels = AREAS[area]
    profile = L.AREAS[area]
    assert profile.default_um == round(default * 1000)
    assert profile.depth_limit_um(False) == round(hard * 1000)
    assert profile.depth_limit_um(True) == round(override * 1000)
    first, last = levels
    assert profile.allowed_rates() == tuple(L.RATE_LEVELS_SPS[first - 1 : last])


def test_an_edited_profile_that_breaks_its_order_is_refused() -> None:
    """Profiles are editable data; an edit with levels outside 1..6, or an override maximum
    below the plain maximum, is refused when the profile is made."""
    with pytest.raises(ValueError, match="speed levels"):
        L.AreaProfile(A.NECK, "neck", 500, 1000, 1000, (0, 3))
    with pytest.raises(ValueError, match="depths must rise"):
        L.AreaProfile(A.NECK, "neck", 500, 1000, 900, (1, 3))
