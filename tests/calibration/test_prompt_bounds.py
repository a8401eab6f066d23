"""Issue 16 finding 5: the manual instrument's certificate answers are bounded to what a real
certificate can say (resolution positive and below the range, 1 ≤ k ≤ 10, finite numbers,
dates, a calibration not in the future); every re-ask says WHY the answer was refused."""

from __future__ import annotations

import asyncio
import datetime as dt

import pytest

from micropen.host.calibration.measurements import Quantity
from micropen.host.calibration.prompts import ask_calibration, ask_date, ask_number
from micropen.host.errors import InvalidInput

TODAY = dt.date(2026, 6, 15)


class Technician:
    """Answers in order; records every question it was asked."""

    def __init__(self, *answers: str) -> None:
        self.answers = list(answers)
        self.questions: list[str] = []

    def __call__(self, question: str) -> str:
        self.questions.append(question)
        return self.answers.pop(0)


def _number(tech: Technician, **bounds: object) -> float:
    return asyncio.run(ask_number(tech, "resolution, mm", **bounds))  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("bad", "why"),
    [
        ("abc", "'abc' is not a number"),
        ("nan", "'nan' is not a finite number"),
        ("inf", "'inf' is not a finite number"),
        ("", "'' is not a number"),
        ("-2", "-2 is outside the plausible values"),
        ("1e308", "1e+308 is outside the plausible values"),
    ],
)
def test_a_refused_number_is_asked_again_with_the_reason(bad: str, why: str) -> None:
    tech = Technician(bad, "0.001")
    assert _number(tech, above_low=True, high=10.0, below_high=True) == 0.001
    assert len(tech.questions) == 2
    assert tech.questions[1].startswith(why) and tech.questions[1].endswith("resolution, mm")


def test_the_coverage_factor_is_between_1_and_10() -> None:
    tech = Technician("0", "11", "2.5")
    assert asyncio.run(ask_number(tech, "k", 2.0, low=1.0, high=10.0)) == 2.5
    assert "must be ≥ 1 and ≤ 10" in tech.questions[1] and "0 is outside" in tech.questions[1]
    assert "11 is outside" in tech.questions[2]


def test_a_refused_date_is_asked_again_with_the_reason() -> None:
    tech = Technician("Z", "0.002", "2026-07-01", "2026-01-02")
    when = asyncio.run(ask_date(tech, "calibrated on (YYYY-MM-DD)", TODAY, not_after=TODAY))
    assert when == dt.date(2026, 1, 2)
    assert tech.questions[1].startswith("'Z' is not a date: enter it as YYYY-MM-DD")
    assert tech.questions[2].startswith("'0.002' is not a date")
    assert tech.questions[3].startswith("2026-07-01 is after 2026-06-15")


def test_five_refusals_end_with_the_last_reason() -> None:
    tech = Technician(*["1e308"] * 5)
    with pytest.raises(InvalidInput, match="1e\\+308 is outside the plausible values"):
        _number(tech, above_low=True, high=10.0, below_high=True)


def test_the_gauge_certificate_refuses_resolution_1e308_and_k_0() -> None:
    tech = Technician(
        "C-1", "Lab", "2026-01-01",  # certificate, by, on
        "0.003",  # U
        "0", "2",  # k: 0 refused, then 2
        "1e308", "-2", "0", "0.001",  # resolution: three refused
    )  # fmt: skip
    calibration = asyncio.run(ask_calibration(tech, "depth gauge", Quantity.DEPTH, TODAY))
    assert calibration.coverage_factor == 2.0
    assert calibration.resolution == 0.001
    refusals = [q for q in tech.questions if "outside the plausible" in q]
    assert len(refusals) == 4, tech.questions
