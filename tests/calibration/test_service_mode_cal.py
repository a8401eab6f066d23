"""The calibration procedure enters service mode (its bench-fixture runs need it) and always
leaves it: passed, failed, cancelled or stopped by a fault, the pen ends out of service mode and
refuses a bench-fixture run again."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from _cal_helpers import SIM_TODAY, StepClock, bench

from micropen.host.calibration import Outcome, ProgressEvent, RecordStore, run_calibration
from micropen.host.connection import AsyncPen
from micropen.host.errors import PenRefused
from micropen.protocol.messages import ErrorCode, Run, RunMode, SimParam


async def _calibrate(pen: AsyncPen, store: RecordStore, procedure: str, **kw: Any) -> Any:
    return await run_calibration(
        pen, procedure, await bench(pen, procedure), store=store, clock=StepClock(),
        today=SIM_TODAY, **kw,
    )  # fmt: skip


async def _assert_out_of_service_mode(pen: AsyncPen) -> None:
    assert (await pen.status()).service_mode == 0
    with pytest.raises(PenRefused) as refused:  # the pen's own rule, the host bypassed
        await pen._request(lambda c: Run(c, 9, RunMode.STROKES, 10, 0))
    assert refused.value.code is ErrorCode.SERVICE_MODE_REQUIRED  # checked before the depth


@pytest.mark.parametrize("procedure", ["all", "verify"])
async def test_a_calibration_runs_in_service_mode_and_leaves_it(
    sim_pen: AsyncPen, store: RecordStore, procedure: str
) -> None:
    tasks: list[asyncio.Task[Any]] = []

    def look(event: ProgressEvent) -> None:
        if event.point is not None and not tasks:
            tasks.append(asyncio.ensure_future(sim_pen.status()))

    record = await _calibrate(sim_pen, store, procedure, progress=look)
    seen = [(await t).service_mode for t in tasks]
    assert record.outcome is not Outcome.INCOMPLETE, record.reason  # (seed 3 fails verify)
    assert seen == [1], "the bench-fixture runs happened in service mode"
    await _assert_out_of_service_mode(sim_pen)


async def test_a_cancelled_calibration_leaves_service_mode(
    sim_pen: AsyncPen, store: RecordStore
) -> None:
    task: asyncio.Task[Any] | None = None
    points = 0

    def cancel_on_second_point(event: ProgressEvent) -> None:
        nonlocal points
        points += event.point is not None
        if points == 2 and task is not None:
            task.cancel()

    task = asyncio.ensure_future(_calibrate(sim_pen, store, "all", progress=cancel_on_second_point))
    with pytest.raises(asyncio.CancelledError):
        await task
    await _assert_out_of_service_mode(sim_pen)


async def test_a_fault_mid_calibration_leaves_service_mode(
    sim_pen: AsyncPen, store: RecordStore
) -> None:
    tasks: list[asyncio.Task[Any]] = []

    def stall_on_first_point(event: ProgressEvent) -> None:
        if event.point is not None and not tasks:
            tasks.append(asyncio.ensure_future(sim_pen.sim_set(SimParam.STALL, 1)))

    record = await _calibrate(sim_pen, store, "all", progress=stall_on_first_point)
    for t in tasks:
        await t
    assert record.outcome is Outcome.INCOMPLETE
    await sim_pen.sim_set(SimParam.STALL, 0)
    assert (await sim_pen.status()).service_mode == 0
