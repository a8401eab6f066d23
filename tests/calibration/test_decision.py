"""The decision rule (ILAC-G8:09/2019 §4.2): each statement at and around its boundaries,
for the three rules, and properties that hold for any error and uncertainty."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from micropen.host.calibration import DecisionRule, RuleKind, Verdict
from micropen.host.errors import InvalidInput

P, CP, CF, F = Verdict.PASS, Verdict.CONDITIONAL_PASS, Verdict.CONDITIONAL_FAIL, Verdict.FAIL
NON_BINARY = DecisionRule()  # w = U
TL, U = 0.05, 0.0034  # the as-left depth limit (mm) and a typical U on the simulator's bench


@pytest.mark.parametrize(
    ("error", "verdict"),
    [
        (0.0, P),
        (0.0466, P),  # TL − U: the acceptance limit itself passes
        (0.0467, CP),
        (-0.0480, CP),  # symmetric
        (0.0500, CP),  # on the tolerance limit: still inside it
        (0.0501, CF),
        (0.0534, CF),  # TL + U
        (0.0535, F),
        (-0.2, F),
        (math.nan, F),
        (math.inf, F),
    ],
)
def test_non_binary_with_guard_band_u(error: float, verdict: Verdict) -> None:
    assert NON_BINARY.judge(error, U, TL) is verdict


@pytest.mark.parametrize(
    ("rule", "error", "verdict"),
    [
        (DecisionRule(RuleKind.GUARD_BAND), 0.0466, P),  # §4.2.2: pass only inside TL − w
        (DecisionRule(RuleKind.GUARD_BAND), 0.0467, F),
        (DecisionRule(RuleKind.GUARD_BAND), 0.0500, F),
        (DecisionRule(RuleKind.SIMPLE), 0.0500, P),  # §4.2.1: U plays no part
        (DecisionRule(RuleKind.SIMPLE), 0.0501, F),
        (DecisionRule(RuleKind.NON_BINARY, 2.0), 0.0432, P),  # w = 2U = 0.0068
        (DecisionRule(RuleKind.NON_BINARY, 2.0), 0.0433, CP),
        (DecisionRule(RuleKind.NON_BINARY, 2.0), 0.0568, CF),
        (DecisionRule(RuleKind.NON_BINARY, 2.0), 0.0569, F),
        (DecisionRule(RuleKind.NON_BINARY, 0.0), 0.0501, F),  # no band: nothing conditional
    ],
)
def test_other_rules_and_bands(rule: DecisionRule, error: float, verdict: Verdict) -> None:
    assert rule.judge(error, U, TL) is verdict


@given(
    error=st.floats(-1.0, 1.0),
    expanded=st.floats(0.0, 0.2),
    tolerance=st.floats(0.01, 0.5),
    factor=st.floats(0.0, 3.0),
)
def test_statements_follow_the_zones(
    error: float, expanded: float, tolerance: float, factor: float
) -> None:
    verdict = DecisionRule(RuleKind.NON_BINARY, factor).judge(error, expanded, tolerance)
    size, w, slack = abs(error), factor * expanded, 1e-9
    assert verdict.passed is (size <= tolerance + 1e-12)
    if size < tolerance - w - slack or size > tolerance + w + slack:
        assert not verdict.conditional  # clear of the limit by more than w: a plain statement
    if verdict.conditional:
        assert abs(size - tolerance) <= w + slack
    binary = DecisionRule(RuleKind.GUARD_BAND, factor).judge(error, expanded, tolerance)
    assert binary in (P, F) and (binary is P) is (verdict is P)


@given(a=st.floats(0.0, 0.2), b=st.floats(0.0, 0.2), expanded=st.floats(0.0, 0.05))
def test_a_larger_error_never_gets_a_better_statement(a: float, b: float, expanded: float) -> None:
    small, large = sorted((a, b))
    assert (
        NON_BINARY.judge(small, expanded, TL).severity
        <= NON_BINARY.judge(large, expanded, TL).severity
    )


def test_rules_parse_and_refuse_with_the_fix() -> None:
    assert DecisionRule.parse("guard-band", 1.5) == DecisionRule(RuleKind.GUARD_BAND, 1.5)
    assert DecisionRule.parse("non-binary") == DecisionRule()
    with pytest.raises(InvalidInput, match="'strict' is not one of simple, guard-band, non-binary"):
        DecisionRule.parse("strict")
    for bad in (-0.5, 3.5, math.nan):
        with pytest.raises(InvalidInput, match="guard band factor"):
            DecisionRule.parse("non-binary", bad)


def test_the_statement_names_the_document_the_section_and_the_band() -> None:
    text = DecisionRule().statement()
    assert "ILAC-G8:09/2019" in text and "§4.2.3" in text and "w = U" in text
    assert "Conditional pass" in text and "Conditional fail" in text
    assert "§4.2.1" in DecisionRule(RuleKind.SIMPLE).statement()
    assert "w = 2·U" in DecisionRule(RuleKind.GUARD_BAND, 2.0).statement()
    rule = DecisionRule(RuleKind.GUARD_BAND, 0.5)
    assert DecisionRule.from_dict(rule.to_dict()) == rule
