"""The correction maths: least squares recovers lines, and the correction cancels a unit's
errors whatever calibration was in force when it was measured."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from micropen.host.calibration import (
    CalValues,
    FitError,
    corrected_depth,
    corrected_rate,
    fit_line,
    fit_slope,
)
from micropen.protocol import limits as L

set_points = st.lists(
    st.floats(200, 2500, allow_nan=False), min_size=2, max_size=12, unique=True
).filter(lambda xs: max(xs) - min(xs) > 10)


@given(
    slope=st.floats(0.5, 1.5),
    intercept=st.floats(-500, 500),
    xs=set_points,
)
def test_fit_line_recovers_slope_and_intercept_from_noiseless_points(
    slope: float, intercept: float, xs: list[float]
) -> None:
    line = fit_line(xs, [slope * x + intercept for x in xs])
    assert line.slope == pytest.approx(slope, rel=1e-9, abs=1e-9)
    assert line.intercept == pytest.approx(intercept, abs=1e-6)
    assert line.max_residual < 1e-6


@given(slope=st.floats(0.5, 1.5), xs=st.lists(st.floats(50, 150), min_size=1, max_size=8))
def test_fit_slope_recovers_a_gain(slope: float, xs: list[float]) -> None:
    line = fit_slope(xs, [slope * x for x in xs])
    assert line.slope == pytest.approx(slope, rel=1e-12)
    assert line.intercept == 0.0


def _measured_depth(cal: CalValues, gain_err: float, offset_err: float, c: float) -> float:
    """The firmware's correction, then the unit's manufacturing errors (sim/physics.py)."""
    actuator = c * (1 + cal.depth_gain_ppm / 1e6) + cal.depth_offset_um
    return actuator * (1 + gain_err) + offset_err


@settings(max_examples=200)
@given(
    gain_err=st.floats(-0.03, 0.03),
    offset_err=st.floats(-80, 80),
    current=st.builds(
        CalValues,
        st.integers(-50_000, 50_000),
        st.integers(-150, 150),
        st.integers(-50_000, 50_000),
    ),
)
def test_corrected_depth_cancels_the_units_errors(
    gain_err: float, offset_err: float, current: CalValues
) -> None:
    xs = [250.0, 500.0, 1000.0, 1500.0, 2000.0, 2500.0]
    line = fit_line(xs, [_measured_depth(current, gain_err, offset_err, x) for x in xs])
    new = corrected_depth(current, line)
    assert new.rate_gain_ppm == current.rate_gain_ppm  # a depth fit leaves the rate alone
    for c in (200.0, 800.0, 2500.0):
        # integer storage: 0.5 µm of offset rounding, 0.5 ppm of gain rounding
        assert abs(_measured_depth(new, gain_err, offset_err, c) - c) <= 0.6


@given(speed_err=st.floats(-0.04, 0.04), current_ppm=st.integers(-50_000, 50_000))
def test_corrected_rate_cancels_the_units_speed_error(speed_err: float, current_ppm: int) -> None:
    current = CalValues(1234, -5, current_ppm)
    levels = [50.0, 70.0, 90.0, 110.0]
    line = fit_slope(levels, [x * (1 + current_ppm / 1e6) * (1 + speed_err) for x in levels])
    new = corrected_rate(current, line)
    assert (new.depth_gain_ppm, new.depth_offset_um) == (1234, -5)
    for level in (50.0, 150.0):
        measured = level * (1 + new.rate_gain_ppm / 1e6) * (1 + speed_err)
        assert measured == pytest.approx(level, rel=1e-6)


@pytest.mark.parametrize(
    ("xs", "ys", "words"),
    [
        ([1000.0], [1000.0], "too few"),
        ([1000.0, 1000.0], [1000.0, 1010.0], "distinct"),
        ([500.0, 1000.0], [500.0], "pair up"),
        ([500.0, 1000.0], [500.0, math.nan], "finite"),
    ],
)
def test_fit_line_refuses_points_that_give_no_line(
    xs: list[float], ys: list[float], words: str
) -> None:
    with pytest.raises(FitError, match=words):
        fit_line(xs, ys)


def test_a_correction_beyond_the_storage_limits_is_refused_not_clipped() -> None:
    line = fit_line([500.0, 2500.0], [500.0 * 1.5, 2500.0 * 1.5])  # a 50 % gain error
    with pytest.raises(FitError, match=f"±{L.CAL_GAIN_PPM_LIMIT}"):
        corrected_depth(CalValues(), line)
    with pytest.raises(FitError, match="does not rise"):
        corrected_depth(CalValues(), fit_line([500.0, 2500.0], [900.0, 100.0]))
    with pytest.raises(FitError, match="does not rise"):
        corrected_rate(CalValues(), fit_slope([50.0], [0.0]))
