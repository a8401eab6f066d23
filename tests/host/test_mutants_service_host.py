"""The host's service-mode checks (host/safety.py ``check_treatment_area``, ``check_area_mode``),
word for word.

Written to kill the mutants of those two functions that tests/host/test_safety_host.py and
test_service_mode_host.py let survive (docs/safety.md). The spec's numbers are stated
literally: area 9 is the bench fixture, the pen's whole 0.20–2.50 mm envelope, and never skin;
areas 1–8 are the treatment areas, and the refusal names exactly those eight, in that order.
"""

from __future__ import annotations

import pytest

from micropen.host.errors import SafetyLimitError
from micropen.host.safety import check_area_mode, check_treatment_area, resolve_area
from micropen.protocol import limits as L

FIXTURE_REFUSAL = (
    "bench_fixture is the calibration fixture, never skin: the pen runs there only in service "
    "mode, which micropen calibrate enters and leaves; choose a treatment area (periorbital, "
    "forehead, nose_upper_lip, cheeks, acne_scars, neck, stretch_marks, scalp)"
)


def test_the_fixture_refusal_lists_the_eight_treatment_areas_and_not_the_fixture() -> None:
    fixture = resolve_area(9)
    assert fixture.area is L.Area.BENCH_FIXTURE
    with pytest.raises(SafetyLimitError) as info:
        check_treatment_area(fixture)
    assert str(info.value) == FIXTURE_REFUSAL
    with pytest.raises(SafetyLimitError) as info:
        check_area_mode(fixture, in_service=False)
    assert str(info.value) == FIXTURE_REFUSAL


@pytest.mark.parametrize("area", range(1, 9))
def test_each_treatment_area_against_the_mode(area: int) -> None:
    profile = resolve_area(area)
    check_treatment_area(profile)  # areas 1–8 are treatment areas
    check_area_mode(profile, in_service=False)
    with pytest.raises(SafetyLimitError) as info:
        check_area_mode(profile, in_service=True)
    assert str(info.value) == (
        f"the pen is in service mode (bench fixture only) and refuses a {profile.name} run; "
        "leave service mode first (it ends with the calibration that entered it)"
    )


def test_in_service_mode_the_fixture_passes() -> None:
    check_area_mode(resolve_area(9), in_service=True)
