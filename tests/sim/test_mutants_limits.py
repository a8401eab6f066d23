"""The envelope constants tests/test_spec_numbers.py does not state, and the area lookups.

Written to kill the mutants of protocol/limits.py that tests/test_spec_numbers.py and
tests/sim/test_safety_controls.py let survive (docs/safety.md). Numbers are stated literally,
from pen-spec.md and the docs that publish them (docs/protocol.md, docs/simulator.md,
docs/calibration.md).
"""

from __future__ import annotations

import dataclasses

import pytest

from micropen.protocol import limits as L

A = L.Area


def test_constants_stated_in_the_spec_and_docs() -> None:
    assert L.DEPTH_HOME_UM == 0  # 0.00 mm: retracted
    assert L.DEPTH_ACTUATOR_STEP_UM == 50  # 0.05 mm actuator step
    assert L.DEPTH_UI_STEP_UM == 100  # 0.1 mm UI step
    assert L.DEPTH_PRESET_STEP_UM == 250  # 0.25 mm presets
    assert (L.RUN_DURATION_MIN_MS, L.RUN_DURATION_MAX_MS) == (100, 1_800_000)  # 0.1 s–30 min
    assert L.RATE_DRIFT_SETTLE_MS == 250 and L.RATE_DRIFT_HOLD_MS == 100
    assert L.STALL_CURRENT_MA == 900  # docs/simulator.md: over 900 mA for more than 100 ms
    assert (L.TELEMETRY_MAX_HZ, L.TELEMETRY_DEFAULT_HZ) == (1000, 0)
    assert (L.CAL_GAIN_PPM_LIMIT, L.CAL_OFFSET_UM_LIMIT) == (200_000, 500)  # ±20 %, ±0.5 mm
    assert (L.REPLY_CACHE_SESSIONS, L.REPLY_CACHE_PER_SESSION) == (4, 256)
    assert L.HELD_RECORDS_MAX == 4096


def test_area_wire_numbers() -> None:
    assert [(a.value, a.name) for a in A] == [
        (1, "PERIORBITAL"), (2, "FOREHEAD"), (3, "NOSE_UPPER_LIP"), (4, "CHEEKS"),
        (5, "ACNE_SCARS"), (6, "NECK"), (7, "STRETCH_MARKS"), (8, "SCALP"), (9, "BENCH_FIXTURE"),
    ]  # fmt: skip
    assert list(L.AREAS) == list(A)
    assert all(profile.area is area for area, profile in L.AREAS.items())


def test_the_bench_fixture_reaches_the_whole_envelope_with_the_override_only() -> None:
    bench = L.AREAS[A.BENCH_FIXTURE]
    assert (bench.default_um, bench.max_um, bench.override_max_um) == (1000, 1500, 2500)
    assert bench.allowed_rates() == (50, 70, 90, 110, 130, 150)
    assert bench.levels == (1, 6)
    with pytest.raises(dataclasses.FrozenInstanceError):
        bench.max_um = 2500  # type: ignore[misc]
    assert bench.label == "bench fixture (calibration only)"


def test_allowed_rates_per_area_stated_literally() -> None:
    assert L.AREAS[A.NOSE_UPPER_LIP].allowed_rates() == (50, 70)
    assert L.AREAS[A.CHEEKS].allowed_rates() == (70, 90, 110)
    assert L.AREAS[A.SCALP].allowed_rates() == (50, 70, 90, 110)
    assert L.AREAS[A.PERIORBITAL].label == "periorbital (outside the orbital rim only)"
    edited = L.AreaProfile(A.NECK, "neck, levels 3–5", 500, 1000, 1000, (3, 5))  # an edited profile
    assert edited.allowed_rates() == (90, 110, 130)


def test_areas_are_found_by_name_in_any_case_with_dashes_or_by_number() -> None:
    assert L.area_profile("nose-upper-lip").area is A.NOSE_UPPER_LIP
    assert L.area_profile("STRETCH_MARKS").area is A.STRETCH_MARKS
    assert L.area_profile(8).area is A.SCALP
    assert L.area_profile(A.NECK).name == "neck"
    assert list(L.AREAS_BY_NAME)[:2] == ["periorbital", "forehead"]


@pytest.mark.parametrize("bad", ["elbow", 0, 10, "", "1"])
def test_an_unknown_area_lists_every_valid_name(bad: object) -> None:
    with pytest.raises(KeyError) as info:
        L.area_profile(bad)  # type: ignore[arg-type]
    assert info.value.args[0] == (
        f"unknown treatment area {bad!r}; valid: periorbital, forehead, nose_upper_lip, "
        "cheeks, acne_scars, neck, stretch_marks, scalp, bench_fixture"
    )
