"""Questions to the technician: one answer at a time, checked, asked again with the reason.

Why its own module: ``--gauge manual`` asks for an instrument's identity, its calibration
certificate's data and every reading; each answer is parsed and checked here the same way (a
date, a number ≥ 0, at most :data:`MANUAL_ATTEMPTS` tries), so a typo is caught where it is
typed, not in the uncertainty budget.
"""

from __future__ import annotations

import datetime as dt
import inspect
import math
from collections.abc import Awaitable, Callable

from micropen.host.errors import InvalidInput

from .measurements import Quantity
from .traceability import ReferenceCalibration

__all__ = ["MANUAL_ATTEMPTS", "Prompt", "ask", "ask_calibration", "ask_date", "ask_number"]

Prompt = Callable[[str], "str | Awaitable[str]"]
"""Ask the technician one question, return the answer (sync or async; tests inject one)."""

MANUAL_ATTEMPTS = 5
K_MIN, K_MAX = 1.0, 10.0  # a coverage factor: k = 1 (standard) up to wide Student-t factors


async def ask_date(
    prompt: Prompt,
    question: str,
    today: dt.date,
    *,
    not_after: dt.date | None = None,
) -> dt.date:
    """A date (YYYY-MM-DD), asked again with the reason; ``not_after`` bounds it (e.g. a
    calibration cannot have been done after today)."""
    text, reason = "", ""
    for _ in range(MANUAL_ATTEMPTS):
        text = (await ask(prompt, reason + question)).strip()
        try:
            value = dt.date.fromisoformat(text)
        except ValueError:
            reason = f"{text!r} is not a date: enter it as YYYY-MM-DD (e.g. {today.isoformat()}). "
            continue
        if not_after is not None and value > not_after:
            reason = f"{value.isoformat()} is after {not_after.isoformat()}; check the date. "
            continue
        return value
    raise InvalidInput(f"{question.split(' (')[0]}: {reason.strip()}")


async def ask_number(
    prompt: Prompt,
    question: str,
    default: float | None = None,
    *,
    low: float = 0.0,
    high: float = math.inf,
    above_low: bool = False,
    below_high: bool = False,
) -> float:
    """A finite number within [low, high] (``above_low``/``below_high``: the bound itself
    excluded), asked again with the reason; empty gives ``default`` when there is one."""
    text, reason = "", ""
    lo_word = ">" if above_low else "≥"
    hi_word = "<" if below_high else "≤"
    bounds = f"{lo_word} {low:g}" + (f" and {hi_word} {high:g}" if math.isfinite(high) else "")
    for _ in range(MANUAL_ATTEMPTS):
        text = (await ask(prompt, reason + question)).strip()
        if not text and default is not None:
            return default
        try:
            value = float(text)
        except ValueError:
            reason = f"{text!r} is not a number; enter a number {bounds}. "
            continue
        if not math.isfinite(value):
            reason = f"{text!r} is not a finite number; enter a number {bounds}. "
            continue
        too_low = value <= low if above_low else value < low
        too_high = value >= high if below_high else value > high
        if too_low or too_high:
            reason = f"{value:g} is outside the plausible values: it must be {bounds}. "
            continue
        return value
    raise InvalidInput(f"{question}: {reason.strip()} Copy it from the certificate")


async def ask_calibration(
    prompt: Prompt, name: str, quantity: Quantity, today: dt.date
) -> ReferenceCalibration:
    """The instrument certificate's data, typed by the technician from the certificate; each
    answer bounded to what a real certificate can say, refused with the reason."""
    from .instruments import RANGES  # here: instruments imports this module

    units = quantity.set_units
    span = RANGES[quantity][1]  # the instrument's range: U and resolution are below it
    certificate = (await ask(prompt, f"{name} calibration certificate number")).strip()
    calibrated_by = (await ask(prompt, f"{name} calibrated by (laboratory)")).strip()
    calibrated_on = await ask_date(
        prompt, f"{name} calibrated on (YYYY-MM-DD)", today, not_after=today
    )
    expanded = await ask_number(
        prompt,
        f"{name} expanded uncertainty U from its certificate, {units}",
        high=span,
        below_high=True,
    )
    k = await ask_number(
        prompt, f"{name} coverage factor k of that U [2]", 2.0, low=K_MIN, high=K_MAX
    )
    resolution = await ask_number(
        prompt,
        f"{name} resolution (one digit), {units}",
        above_low=True,
        high=span,
        below_high=True,
    )
    calibration = ReferenceCalibration(
        certificate, calibrated_on, calibrated_by or "-", expanded, k, resolution
    )
    calibration.check(f"the {name}")
    return calibration


async def ask(prompt: Prompt, question: str) -> str:
    answer = prompt(question)
    if inspect.isawaitable(answer):
        answer = await answer
    return str(answer)
