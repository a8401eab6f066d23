"""Limits, units and marginal bands."""

from __future__ import annotations

import math

import pytest

from micropen.host.calibration import Verdict
from micropen.host.calibration.measurements import (
    DEPTH_ACCEPTANCE,
    DEPTH_AS_LEFT,
    MARGINAL_FRACTION,
    RATE_ACCEPTANCE,
    RATE_AS_LEFT,
    Limit,
    worst,
)
from micropen.protocol import limits as L


def test_limits_come_from_protocol_limits() -> None:
    assert DEPTH_AS_LEFT.tolerance == L.DEPTH_AS_LEFT_TOL_UM / 1000 == 0.05
    assert DEPTH_ACCEPTANCE.tolerance == L.DEPTH_ACCEPT_TOL_UM / 1000 == 0.10
    assert RATE_AS_LEFT.tolerance == L.RATE_AS_LEFT_TOL_PCT == 2.0
    assert RATE_ACCEPTANCE.tolerance == L.RATE_ACCEPT_TOL_PCT == 5.0
    assert (DEPTH_AS_LEFT.units, RATE_AS_LEFT.units) == ("mm", "%")


@pytest.mark.parametrize(
    ("limit", "error", "verdict"),
    [
        (DEPTH_AS_LEFT, 0.0, Verdict.PASS),
        (DEPTH_AS_LEFT, 0.040, Verdict.PASS),  # exactly 80 %: not yet marginal
        (DEPTH_AS_LEFT, -0.041, Verdict.MARGINAL),
        (DEPTH_AS_LEFT, 0.050, Verdict.MARGINAL),  # on the limit passes
        (DEPTH_AS_LEFT, 0.0501, Verdict.FAIL),
        (DEPTH_ACCEPTANCE, -0.0999, Verdict.MARGINAL),
        (DEPTH_ACCEPTANCE, 0.117, Verdict.FAIL),
        (RATE_AS_LEFT, -1.7, Verdict.MARGINAL),
        (RATE_AS_LEFT, 2.1, Verdict.FAIL),
        (RATE_ACCEPTANCE, 3.9, Verdict.PASS),
        (RATE_ACCEPTANCE, math.nan, Verdict.FAIL),
        (RATE_ACCEPTANCE, math.inf, Verdict.FAIL),
    ],
)
def test_verdicts_and_marginal_band(limit: Limit, error: float, verdict: Verdict) -> None:
    assert limit.verdict(error) is verdict
    assert verdict.passed is (verdict is not Verdict.FAIL)


def test_marginal_fraction_is_configurable_per_limit() -> None:
    strict = Limit("strict", 1.0, "mm", marginal_fraction=0.5)
    assert strict.verdict(0.6) is Verdict.MARGINAL
    assert Limit("default", 1.0, "mm").verdict(0.6) is Verdict.PASS
    assert MARGINAL_FRACTION == 0.8


def test_worst_orders_fail_over_marginal_over_pass() -> None:
    assert worst([]) is None
    assert worst([Verdict.PASS, Verdict.MARGINAL]) is Verdict.MARGINAL
    assert worst([Verdict.MARGINAL, Verdict.FAIL, Verdict.PASS]) is Verdict.FAIL
    assert DEPTH_AS_LEFT.describe() == "±0.05 mm (as-left)"
