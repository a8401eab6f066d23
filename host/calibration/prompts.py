"""Questions to the technician: one answer at a time, checked, asked again with the reason.

Why its own module: ``--gauge manual`` asks for an instrument's identity, its calibration
certificate's data and every reading; each answer is parsed and checked here the same way (a
date, a number ≥ 0, at most :data:`MANUAL_ATTEMPTS` tries), so a typo is caught where it is
typed, not in the uncertainty budget.
"""

from __future__ import annotations

import contextlib
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


async def ask_date(prompt: Prompt, question: str, today: dt.date) -> dt.date:
    text = ""
    for _ in range(MANUAL_ATTEMPTS):
        text = (await ask(prompt, question)).strip()
        with contextlib.suppress(ValueError):
            return dt.date.fromisoformat(text)
    raise InvalidInput(
        f"{question.split(' (')[0]}: {text!r} is not a date; enter it as YYYY-MM-DD "
        f"(e.g. {today.isoformat()})"
    )


async def ask_number(prompt: Prompt, question: str, default: float | None = None) -> float:
    text = ""
    for _ in range(MANUAL_ATTEMPTS):
        text = (await ask(prompt, question)).strip()
        if not text and default is not None:
            return default
        with contextlib.suppress(ValueError):
            value = float(text)
            if math.isfinite(value) and value >= 0:
                return value
    raise InvalidInput(f"{question}: {text!r} is not a number ≥ 0; copy it from the certificate")


async def ask_calibration(
    prompt: Prompt, name: str, quantity: Quantity, today: dt.date
) -> ReferenceCalibration:
    """The instrument certificate's data, typed by the technician from the certificate."""
    units = quantity.set_units
    certificate = (await ask(prompt, f"{name} calibration certificate number")).strip()
    calibrated_by = (await ask(prompt, f"{name} calibrated by (laboratory)")).strip()
    calibrated_on = await ask_date(prompt, f"{name} calibrated on (YYYY-MM-DD)", today)
    expanded = await ask_number(
        prompt, f"{name} expanded uncertainty U from its certificate, {units}"
    )
    k = await ask_number(prompt, f"{name} coverage factor k of that U [2]", 2.0)
    resolution = await ask_number(prompt, f"{name} resolution (one digit), {units}")
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
