"""The host's envelope checks (hazard 1, stroke bounds), boundary by boundary.

Written to kill the mutants of host/safety.py that tests/host/test_safety_host.py let survive
(docs/safety.md). The spec's numbers are stated literally: 0.20–2.50 mm, 1.50 mm soft cap,
0.01 mm on the wire, 50–150 strokes/s, 1–1,000,000 strokes, 0.1–1800 s.
"""

from __future__ import annotations

import pytest

from micropen.host.errors import SafetyLimitError
from micropen.host.safety import NOMINAL_PEN, check_depth, check_rate, check_run, resolve_area
from micropen.protocol import limits as L

PEN = NOMINAL_PEN


def test_the_nominal_pen_is_the_specs_envelope() -> None:
    assert (PEN.depth_min_um, PEN.depth_max_um, PEN.soft_cap_um) == (200, 2500, 1500)
    assert (PEN.rate_min_sps, PEN.rate_max_sps, PEN.needle_count) == (50, 150, 12)


def test_sub_micrometre_depths_are_refused_even_when_they_round_to_the_grid() -> None:
    for bad in (0.5001, 0.4999, 0.50000001):
        with pytest.raises(SafetyLimitError, match="finer than the pen's 0.01 mm resolution"):
            check_depth(bad, PEN)
    assert check_depth(0.29, PEN) == 290  # 0.29 * 1000 is 290.00000000000006 in binary
    assert check_depth(1, PEN) == 1000  # an int is a number of millimetres too


def test_the_range_is_inclusive_at_both_ends() -> None:
    assert check_depth(0.20, PEN) == 200
    assert check_depth(2.50, PEN, override_reason="physician order") == 2500
    with pytest.raises(SafetyLimitError) as info:
        check_depth(2.6, PEN)
    assert str(info.value) == (
        "depth 2.60 mm is outside the pen's range 0.20 mm–2.50 mm (0 retracts); "
        "choose a depth in that range"
    )
    with pytest.raises(SafetyLimitError, match=r"^depth 6\.00 mm is outside"):
        check_depth(6.0, PEN)  # millimetres shown exactly, not merely rounded to look right


def test_a_pen_reporting_a_narrower_range_is_held_to_it() -> None:
    narrow = PEN.replace(depth_min_um=300, depth_max_um=1000, rate_min_sps=70, rate_max_sps=130)
    with pytest.raises(SafetyLimitError, match="0.30 mm–1.00 mm"):
        check_depth(0.25, narrow)
    with pytest.raises(SafetyLimitError, match="0.30 mm–1.00 mm"):
        check_depth(1.1, narrow)
    with pytest.raises(
        SafetyLimitError, match="range 70–130/s; levels are 50, 70, 90, 110, 130, 150"
    ):
        check_rate(50, narrow)
    assert check_rate(130, narrow) == 130


def test_the_area_hint_names_the_override_maximum_only_where_one_exists() -> None:
    # a pen whose own soft cap is higher lets an area's maximum, not the cap, refuse first
    high_cap = PEN.replace(soft_cap_um=2500)
    with pytest.raises(SafetyLimitError) as info:
        check_depth(1.6, high_cap, resolve_area("cheeks"))
    assert str(info.value) == (
        "depth 1.60 mm is above the cheeks maximum 1.50 mm (2.00 mm with a soft-cap override); "
        "choose ≤ 1.50 mm or the right treatment area"
    )
    with pytest.raises(SafetyLimitError) as info:
        check_depth(2.1, high_cap, resolve_area("cheeks"), "physician order")
    assert "(" not in str(info.value)  # with the override there is nothing more to offer
    with pytest.raises(SafetyLimitError) as info:
        check_depth(0.8, PEN, resolve_area("forehead"))
    assert str(info.value) == (
        "depth 0.80 mm is above the forehead maximum 0.75 mm; choose ≤ 0.75 mm or the right "
        "treatment area"
    )
    no_override = L.AreaProfile(L.Area.FOREHEAD, "forehead", 500, 750, int("750"), (1, 3))
    with pytest.raises(SafetyLimitError) as info:
        check_depth(0.8, PEN, no_override)
    assert "override" not in str(info.value)


def test_rates_must_be_whole_numbers() -> None:
    for bad in (90.0, "90", False):
        with pytest.raises(SafetyLimitError, match="is not a whole number of strokes/s"):
            check_rate(bad, PEN)  # type: ignore[arg-type]
    with pytest.raises(SafetyLimitError) as info:
        check_rate(90, PEN, resolve_area("nose_upper_lip"))
    assert str(info.value) == (
        "stroke rate 90/s is not allowed for nose_upper_lip (levels 1–2: 50, 70/s); "
        "choose one of those"
    )


def test_stroke_bounds_need_whole_numbers() -> None:
    for bad in (True, 5.0, "5"):
        with pytest.raises(SafetyLimitError, match="is not a whole number"):
            check_run(bad, None)  # type: ignore[arg-type]
    with pytest.raises(SafetyLimitError) as info:
        check_run(1_000_001, None)
    assert str(info.value) == "strokes 1000001 is outside 1–1,000,000; choose a count in that range"


def test_duration_bounds_are_0_1_to_1800_s_inclusive() -> None:
    assert check_run(None, 0.1) == (0, 100)
    assert check_run(None, 1800) == (0, 1_800_000)
    for bad in (0.099, 0.0, -1.0, 1800.001):
        with pytest.raises(SafetyLimitError) as info:
            check_run(None, bad)
        assert str(info.value) == (
            f"duration {bad} s is outside 0.1–1800 s; choose a duration in that range"
        )
    for bad in (float("nan"), float("inf"), "10"):
        with pytest.raises(SafetyLimitError, match="is not a number"):
            check_run(None, bad)  # type: ignore[arg-type]


def test_area_lookups_by_name_and_number() -> None:
    assert resolve_area("Forehead").area is L.Area.FOREHEAD
    assert resolve_area(4).area is L.Area.CHEEKS
    with pytest.raises(SafetyLimitError, match="unknown treatment area 42"):
        resolve_area(42)
