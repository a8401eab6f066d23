"""The uncertainty budget (GUM): a point worked by hand, the sensitivity of the rate error,
the coverage factor against the t-distribution, rounding, and properties of any budget."""

from __future__ import annotations

import math
from datetime import date

import pytest
from hypothesis import given
from hypothesis import strategies as st

from micropen.host.calibration.measurements import Quantity
from micropen.host.calibration.traceability import ReferenceCalibration, simulated_calibration
from micropen.host.calibration.uncertainty import (
    ALPHA_PER_K,
    Ambient,
    coverage_factor,
    evaluate_point,
    report_decimals,
    round_up,
)
from micropen.sim import bench as sim_bench

GAUGE = ReferenceCalibration("C-1", date(2025, 3, 1), "Lab", 0.002, 2.0, 0.001)
TACHO = ReferenceCalibration("C-2", date(2025, 3, 1), "Lab", 0.0, 2.0, 0.01, 0.0003)


def test_a_depth_point_worked_by_hand() -> None:
    """Five readings at 1 mm, a 0.002 mm (k = 2) gauge of 0.001 mm resolution, 22.5 °C."""
    readings = (1.001, 1.003, 1.002, 1.000, 1.004)
    error, budget = evaluate_point(Quantity.DEPTH, 1.0, readings, GAUGE, Ambient(22.5, "entered"))
    assert error == pytest.approx(0.002)
    terms = {c.key: c for c in budget.contributions}
    assert terms["repeatability"].contribution == pytest.approx(0.0015811388 / math.sqrt(5))
    assert terms["repeatability"].dof == 4
    assert terms["reference"].contribution == pytest.approx(0.001)  # 0.002 / 2
    assert terms["resolution"].contribution == pytest.approx(0.0005 / math.sqrt(3))
    # 1.002 mm of steel, 2.5 K from 20 °C plus 1 K for the thermometer, rectangular
    assert terms["temperature"].contribution == pytest.approx(1.002 * 11.5e-6 * 3.5 / math.sqrt(3))
    assert ALPHA_PER_K == 11.5e-6
    assert budget.combined == pytest.approx(0.0012585, rel=1e-4)
    assert budget.dof_effective == pytest.approx(40.14, abs=0.01)  # Welch–Satterthwaite
    assert budget.coverage_factor == 2.06  # GUM table G.2 at ν = 40
    assert budget.expanded == 0.0026  # 2.06 × 0.0012585 = 0.0025925, rounded up
    assert budget.decimals == 4
    assert {c.distribution for c in budget.contributions if c.kind == "B"} == {
        "normal",
        "rectangular",
    }


def test_the_rate_error_is_in_percent_of_the_set_rate() -> None:
    readings = (110.2, 110.4, 110.3)
    error, budget = evaluate_point(Quantity.RATE, 110, readings, TACHO, Ambient(None, "none"))
    assert error == pytest.approx((110.3 / 110 - 1) * 100)
    for term in budget.contributions:  # every input enters through the indication
        assert term.sensitivity == pytest.approx(100 / 110)
        assert term.contribution == pytest.approx(100 / 110 * term.standard)
    assert budget.contribution("reference").value == pytest.approx(0.0003 * 110.3)  # U at rdg
    assert budget.contribution("temperature") is None  # depth only


def test_identical_readings_leave_the_resolution_and_k_2() -> None:
    error, budget = evaluate_point(
        Quantity.DEPTH, 0.5, (0.5, 0.5, 0.5), GAUGE, Ambient(20.0, "entered")
    )
    assert error == 0.0 and budget.contribution("repeatability").contribution == 0.0
    assert budget.dof_effective is None and budget.coverage_factor == 2.0
    assert budget.contribution("resolution").contribution > 0


def test_three_readings_that_dominate_give_a_large_k() -> None:
    """Why the default is 10 readings: repeatability from 3 has 2 degrees of freedom."""
    noisy = (0.49, 0.51, 0.50)
    _, budget = evaluate_point(Quantity.DEPTH, 0.5, noisy, GAUGE, Ambient(20.0, "entered"))
    assert 2 < budget.dof_effective < 3 and budget.coverage_factor == 4.53


@pytest.mark.parametrize("nu", [1, 2, 3, 5, 9, 12, 20, 37, 60, 150, 1000])
def test_coverage_factor_follows_the_t_distribution(nu: int) -> None:
    assert coverage_factor(nu) == pytest.approx(_t_quantile(0.9545, nu), abs=0.011)


def test_coverage_factor_table_values() -> None:
    assert coverage_factor(None) == 2.0
    assert coverage_factor(2.9) == 4.53  # truncated: never more freedom than there is
    assert (coverage_factor(9), coverage_factor(10), coverage_factor(50)) == (2.32, 2.28, 2.05)


def test_rounding_up_to_two_significant_digits() -> None:
    assert round_up(0.0025925) == 0.0026
    assert round_up(0.0033) == 0.0033  # exact: not bumped
    assert round_up(0.03301) == 0.034
    assert round_up(1.01) == 1.1
    assert (report_decimals(0.0026), report_decimals(0.045), report_decimals(1.1)) == (4, 3, 1)


def test_the_simulators_declared_instruments_match_its_bench() -> None:
    gauge = simulated_calibration("SIM-DG-1", "DG-1", date(2026, 1, 1))
    tacho = simulated_calibration("SIM-TA-1", "TA-1", date(2026, 1, 1))
    assert gauge is not None and tacho is not None
    assert gauge.resolution == sim_bench.GAUGE_RESOLUTION_MM
    assert tacho.resolution == sim_bench.TACHO_RESOLUTION_SPS
    assert simulated_calibration("543-790", "A1", date(2026, 1, 1)) is None


@given(
    readings=st.lists(st.floats(0.9, 1.1), min_size=2, max_size=30),
    fixed=st.floats(0.0001, 0.01),
    k=st.sampled_from([1.96, 2.0, 2.5, 3.0]),
)
def test_any_budget_adds_up(readings: list[float], fixed: float, k: float) -> None:
    reference = ReferenceCalibration("C", date(2025, 1, 1), "Lab", fixed, k, 0.001)
    _, budget = evaluate_point(Quantity.DEPTH, 1.0, readings, reference, Ambient(23.0, "pen"))
    squares = sum(c.contribution**2 for c in budget.contributions)
    assert budget.combined == pytest.approx(math.sqrt(squares), rel=1e-9)  # uncorrelated
    raw = budget.coverage_factor * budget.combined
    assert raw <= budget.expanded + 1e-15 <= raw * 1.1 + 1e-15  # rounded up, 2 digits
    assert budget.coverage_factor >= 2.0


def _t_quantile(p: float, nu: int) -> float:
    """Two-sided t quantile by bisection on a Simpson integral of the density (tests only)."""
    scale = math.exp(math.lgamma((nu + 1) / 2) - math.lgamma(nu / 2)) / math.sqrt(nu * math.pi)

    def density(x: float) -> float:
        return scale * (1 + x * x / nu) ** (-(nu + 1) / 2)

    def mass(t: float, steps: int = 2000) -> float:
        h = t / steps
        odd = sum(density((2 * i - 1) * h) for i in range(1, steps // 2 + 1))
        even = sum(density(2 * i * h) for i in range(1, steps // 2))
        return 2 * h / 3 * (density(0) + 4 * odd + 2 * even + density(t))

    lo, hi = 1.0, 20.0
    for _ in range(40):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if mass(mid) < p else (lo, mid)
    return (lo + hi) / 2
