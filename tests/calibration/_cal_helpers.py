"""Helpers for the calibration tests: the simulator's bench, a stepping clock, fault-injecting
instrument wrappers, reference calibrations and a synthetic record."""

from __future__ import annotations

import asyncio
import zlib
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from typing import Any

from micropen.host.calibration import (
    DecisionRule,
    Instrument,
    Issuer,
    Quantity,
    ReferenceCalibration,
    open_instruments,
    quantities_of,
)
from micropen.host.calibration.record import PointResult
from micropen.host.calibration.uncertainty import Ambient, evaluate_point
from micropen.host.connection import AsyncPen
from micropen.sim.pen import SimConfig

# the simulator's calendar: its bench instruments are due 180 days after this day
SIM_TODAY = date(1970, 1, 1) + timedelta(days=SimConfig().today_day)


class StepClock:
    """Wall time for records: starts at noon on ``day`` and moves one second per call."""

    def __init__(self, day: date = SIM_TODAY) -> None:
        self.now = datetime(day.year, day.month, day.day, 12, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        self.now += timedelta(seconds=1)
        return self.now


async def bench(pen: AsyncPen, procedure: str = "all") -> dict[Quantity, Instrument]:
    return await open_instruments("sim", quantities_of(procedure), bench=pen.bench, today=SIM_TODAY)


async def active_bank(pen: AsyncPen) -> tuple[int, ...]:
    data = await pen.cal_read()
    return (
        data.valid,
        data.depth_gain_ppm,
        data.depth_offset_um,
        data.rate_gain_ppm,
        data.counter,
        data.crc,
    )


class Wrapped:
    """An instrument whose readings pass through ``hook(n, value)`` (fault injection)."""

    def __init__(self, inner: Instrument, hook: Callable[[int, float], float]) -> None:
        self.inner, self.hook, self.reads = inner, hook, 0
        self.info, self.quantity = inner.info, inner.quantity

    async def read(self, set_value: float) -> float:
        value = await self.inner.read(set_value)
        self.reads += 1
        return self.hook(self.reads, value)

    async def aclose(self) -> None:
        await self.inner.aclose()


def background(tasks: list[asyncio.Task[Any]], coro: Any) -> None:
    """Start ``coro`` from a synchronous progress callback; the test awaits ``tasks``."""
    tasks.append(asyncio.get_running_loop().create_task(coro))


GAUGE_CAL = ReferenceCalibration("DKD-K-1-2025-0042", date(2025, 3, 1), "Example Metrology",
                                 0.002, 2.0, 0.001)  # fmt: skip
TACHO_CAL = ReferenceCalibration("CAL-2025-7781", date(2024, 2, 11), "Example Metrology",
                                 0.0, 2.0, 0.01, expanded_relative=0.0002)  # fmt: skip


def make_record(
    *,
    serial: str = "SIM-000007",
    procedure: str = "all",
    outcome: str = "pass",
    started: datetime | None = None,
    interval_days: int = 365,
    simulated: bool = True,
    issuer: Issuer | None = None,
) -> Any:
    """A complete synthetic record (as-found off, as-left on, every point with its budget)
    for store and certificate tests."""
    from micropen.host.calibration.fit import CalValues
    from micropen.host.calibration.measurements import (
        DEPTH_ACCEPTANCE,
        DEPTH_AS_LEFT,
        RATE_ACCEPTANCE,
        RATE_AS_LEFT,
        Stage,
    )
    from micropen.host.calibration.record import (
        BankSnapshot,
        CalibrationRecord,
        FitResult,
        InstrumentRef,
        Outcome,
        PenInfo,
        PhaseLog,
    )

    started = started or datetime(2025, 11, 26, 12, 0, tzinfo=UTC)
    record_id = f"{serial}-{started:%Y%m%d%H%M%S}-{procedure}"
    rec = CalibrationRecord(
        record_id=record_id,
        procedure=procedure,
        pen=PenInfo(serial, "MP-12 SIM", "1.0.0", 1, f"sim://?serial={serial}"),
        technician="A. Tech",
        station="bench 1",
        software_version="0.1.0",
        started_at=started,
        interval_days=interval_days,
        ambient_c=22.5,
        ambient_source="entered by technician",
        ambient_location="room thermometer read by the technician at Room 1.07",
        certificate_number=f"EX-{started.year}-{zlib.crc32(record_id.encode()) % 100_000:05d}",
        issuer=issuer if issuer is not None else Issuer(
            lab="Example Calibration Laboratory", address="1 Bench Street, Town",
            accreditation="ISO/IEC 17025 D-K-00000-01-00", location="Room 1.07",
            signatory="Dr. A. Reviewer", signatory_role="Head of laboratory",
        ),
        owner="Example Clinic, 2 Clinic Road",
        method="MP-CAL-A test method",
        method_revision="2",
        simulated_parts=[f"pen {serial}"] if simulated else [],
    )  # fmt: skip
    rec.instruments = [
        InstrumentRef("depth", "manual", "Mitutoyo", "543-790", "DG-7", date(2026, 5, 25),
                      calibration=GAUGE_CAL),
        InstrumentRef("rate", "manual", "Extech", "461920", "TA-7", date(2025, 1, 1),
                      overdue=True, override_reason="loan unit, recal booked",
                      calibration=TACHO_CAL),
    ]  # fmt: skip
    quantities = (
        [Quantity.DEPTH, Quantity.RATE] if procedure in ("all", "verify") else [Quantity(procedure)]
    )
    stages = [Stage.AS_FOUND] if procedure == "verify" else [Stage.AS_FOUND, Stage.AS_LEFT]
    limits = {
        (Quantity.DEPTH, Stage.AS_FOUND): DEPTH_ACCEPTANCE,
        (Quantity.DEPTH, Stage.AS_LEFT): DEPTH_AS_LEFT,
        (Quantity.RATE, Stage.AS_FOUND): RATE_ACCEPTANCE,
        (Quantity.RATE, Stage.AS_LEFT): RATE_AS_LEFT,
    }
    for quantity in quantities:
        points = (
            (0.25, 0.5, 1.0, 1.5, 2.0, 2.5) if quantity is Quantity.DEPTH else (50, 70, 90, 110)
        )
        for stage in stages:
            for i, s in enumerate(points):
                if quantity is Quantity.DEPTH:
                    error = 0.05 + 0.028 * s if stage is Stage.AS_FOUND else 0.002 * (i - 2)
                    if stage is Stage.AS_FOUND and s == 2.0:
                        error = 0.099  # within U of the 0.1 mm limit: a conditional pass
                    mean = s + error
                    spread = 0.001
                else:
                    error = -2.6 if stage is Stage.AS_FOUND else 0.05 * (i - 1)
                    mean = s * (1 + error / 100)
                    spread = 0.02
                readings = (mean - spread, mean, mean + spread)
                rec.points.append(
                    point(quantity, stage, float(s), readings, limits[quantity, stage])
                )
    rec.fits = [FitResult(Quantity.DEPTH, 1.028, 0.05, 0.0012, CalValues(),
                          CalValues(-27237, -49, 0))]  # fmt: skip
    rec.cal_before = BankSnapshot(CalValues(), True, 1, 1, 1764115200, 0x12345678)
    rec.cal_after = BankSnapshot(CalValues(-27237, -49, 26694), True, 1, 2, 1764158400, 0x9ABCDEF0)
    rec.committed = procedure != "verify"
    rec.phases = [PhaseLog("prepare", "pass", 1)]
    rec.notes = ["teardown: motor off, needles retracted (depth set 0), pen idle"]
    rec.outcome = Outcome(outcome)
    rec.reason = "every as-left point within its limit" if outcome == "pass" else "test"
    rec.finished_at = started + timedelta(minutes=3)
    return rec


def point(
    quantity: Quantity,
    stage: Any,
    set_value: float,
    readings: tuple[float, ...],
    limit: Any,
    rule: DecisionRule | None = None,
) -> PointResult:
    """A point as the procedure makes one: budget, reported error, the rule's statement."""
    reference = GAUGE_CAL if quantity is Quantity.DEPTH else TACHO_CAL
    error, budget = evaluate_point(quantity, set_value, readings, reference,
                                   Ambient(22.5, "entered"))  # fmt: skip
    reported = round(error, budget.decimals)
    verdict = (rule or DecisionRule()).judge(reported, budget.expanded, limit.tolerance)
    mean = sum(readings) / len(readings)
    return PointResult(quantity, stage, set_value, readings, mean, reported, limit.tolerance,
                       limit.name, verdict, budget)  # fmt: skip
