"""The host's own envelope checks (the pen checks again: tests/sim/test_safety_*).

Each test is named after the pen-spec.md control it proves, and fails if the check is removed.
"""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from micropen.host.errors import SafetyLimitError
from micropen.host.safety import (
    NOMINAL_PEN,
    check_depth,
    check_rate,
    check_run,
    resolve_area,
)
from micropen.protocol import limits as L

PEN = NOMINAL_PEN  # the reference envelope, as a pen reports it at handshake


def test_safety_depth_range_host_refuses_outside_pen_range() -> None:
    assert check_depth(0.2, PEN) == 200
    assert check_depth(0.0, PEN) == 0
    for bad in (0.1, 0.19, 2.51, 3.0, -0.5):
        with pytest.raises(SafetyLimitError, match="outside the pen's range"):
            check_depth(bad, PEN)


def test_safety_a_run_at_0_mm_is_refused_though_0_retracts() -> None:
    assert check_depth(0.0, PEN) == 0  # a setting: needles home
    for zero in (0.0, -0.0):
        with pytest.raises(SafetyLimitError, match="outside the pen's range 0.20 mm"):
            check_depth(zero, PEN, run=True)
    assert check_depth(0.2, PEN, run=True) == 200


def test_safety_soft_cap_host_needs_override_reason() -> None:
    assert check_depth(1.5, PEN) == 1500
    with pytest.raises(SafetyLimitError, match="soft cap.*override"):
        check_depth(1.6, PEN)
    with pytest.raises(SafetyLimitError, match="soft cap"):
        check_depth(1.6, PEN, override_reason="   ")
    assert check_depth(1.6, PEN, override_reason="deep acne scars, physician order") == 1600


def test_hazard_1_over_depth_host_refuses_above_area_max() -> None:
    forehead = resolve_area("forehead")
    assert check_depth(0.75, PEN, forehead) == 750
    with pytest.raises(SafetyLimitError) as info:
        check_depth(0.8, PEN, forehead)
    message = str(info.value)
    assert "0.80 mm" in message and "forehead" in message and "0.75 mm" in message


def test_hazard_1_override_extends_only_to_area_override_max() -> None:
    cheeks = resolve_area("cheeks")
    with pytest.raises(SafetyLimitError, match="soft cap"):
        check_depth(1.8, PEN, cheeks)
    assert check_depth(1.8, PEN, cheeks, "scarring") == 1800
    with pytest.raises(SafetyLimitError, match="cheeks maximum 2.00 mm"):
        check_depth(2.1, PEN, cheeks, "scarring")


@given(st.sampled_from(list(L.AREAS.values())), st.integers(0, 2600), st.booleans())
def test_host_depth_check_never_allows_more_than_area_permits(
    area: L.AreaProfile, um: int, override: bool
) -> None:
    depth = round(um / 10) / 100
    try:
        got = check_depth(depth, PEN, area, "reason" if override else None)
    except SafetyLimitError:
        return
    assert got == 0 or L.DEPTH_MIN_UM <= got <= area.depth_limit_um(override)
    assert got <= L.DEPTH_SOFT_CAP_UM or override


def test_depth_finer_than_wire_resolution_is_refused() -> None:
    with pytest.raises(SafetyLimitError, match="0.01 mm resolution"):
        check_depth(0.505, PEN)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), "1.0", None])
def test_depth_must_be_a_finite_number(bad: object) -> None:
    with pytest.raises(SafetyLimitError):
        check_depth(bad, PEN)  # type: ignore[arg-type]


def test_safety_stroke_rate_range_host() -> None:
    assert check_rate(50, PEN) == 50
    assert check_rate(150, PEN) == 150
    for bad in (49, 151, 0):
        with pytest.raises(SafetyLimitError, match="outside the pen's range 50–150"):
            check_rate(bad, PEN)
    with pytest.raises(SafetyLimitError):
        check_rate(True, PEN)


def test_safety_area_speed_levels_host() -> None:
    nose = resolve_area("nose_upper_lip")  # levels 1–2: 50–70/s
    assert check_rate(70, PEN, nose) == 70
    with pytest.raises(SafetyLimitError, match="not allowed for nose_upper_lip"):
        check_rate(90, PEN, nose)


def test_safety_stroke_count_bounds_host() -> None:
    assert check_run(1, None) == (1, 0)
    assert check_run(1_000_000, None) == (1_000_000, 0)
    assert check_run(None, 1.5) == (0, 1500)
    for bad in (0, 1_000_001):
        with pytest.raises(SafetyLimitError, match="strokes"):
            check_run(bad, None)
    with pytest.raises(SafetyLimitError, match="exactly one"):
        check_run(10, 1.0)
    with pytest.raises(SafetyLimitError, match="exactly one"):
        check_run(None, None)
    with pytest.raises(SafetyLimitError, match="duration"):
        check_run(None, 3600.0)


def test_unknown_area_lists_valid_names() -> None:
    with pytest.raises(SafetyLimitError, match="unknown treatment area 'elbow'.*forehead"):
        resolve_area("elbow")
