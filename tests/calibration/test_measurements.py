"""Limits, units and the one vocabulary of statements (no "marginal": conditional instead)."""

from __future__ import annotations

from micropen.host.calibration import Verdict
from micropen.host.calibration.measurements import (
    DEPTH_ACCEPTANCE,
    DEPTH_AS_LEFT,
    RATE_ACCEPTANCE,
    RATE_AS_LEFT,
    Quantity,
    Stage,
    worst,
)
from micropen.host.calibration.record import Outcome
from micropen.protocol import limits as L


def test_limits_come_from_protocol_limits() -> None:
    assert DEPTH_AS_LEFT.tolerance == L.DEPTH_AS_LEFT_TOL_UM / 1000 == 0.05
    assert DEPTH_ACCEPTANCE.tolerance == L.DEPTH_ACCEPT_TOL_UM / 1000 == 0.10
    assert RATE_AS_LEFT.tolerance == L.RATE_AS_LEFT_TOL_PCT == 2.0
    assert RATE_ACCEPTANCE.tolerance == L.RATE_ACCEPT_TOL_PCT == 5.0
    assert (DEPTH_AS_LEFT.units, RATE_AS_LEFT.units) == ("mm", "%")
    assert DEPTH_AS_LEFT.describe() == "±0.05 mm (as-left)"


def test_the_four_statements_and_their_order() -> None:
    assert [v.value for v in Verdict] == ["pass", "conditional_pass", "conditional_fail", "fail"]
    assert [v.label for v in Verdict] == ["pass", "conditional pass", "conditional fail", "fail"]
    assert [v.passed for v in Verdict] == [True, True, False, False]
    assert [v.conditional for v in Verdict] == [False, True, True, False]
    assert worst([]) is None
    assert worst([Verdict.PASS, Verdict.CONDITIONAL_PASS]) is Verdict.CONDITIONAL_PASS
    assert worst([Verdict.CONDITIONAL_FAIL, Verdict.CONDITIONAL_PASS]) is Verdict.CONDITIONAL_FAIL
    assert worst([Verdict.CONDITIONAL_FAIL, Verdict.FAIL, Verdict.PASS]) is Verdict.FAIL


def test_outcomes_share_the_vocabulary() -> None:
    assert {Outcome.of(v).value for v in Verdict} == {v.value for v in Verdict}
    assert [o for o in Outcome if o.passed] == [Outcome.PASS, Outcome.CONDITIONAL_PASS]
    assert "marginal" not in {v.value for v in Verdict} | {o.value for o in Outcome}


def test_units() -> None:
    assert (Quantity.DEPTH.set_units, Quantity.DEPTH.error_units) == ("mm", "mm")
    assert (Quantity.RATE.set_units, Quantity.RATE.error_units) == ("strokes/s", "%")
    assert Stage.AS_LEFT.label == "as-left"
