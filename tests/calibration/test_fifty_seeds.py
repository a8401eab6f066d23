"""Fifty simulated units, each with its own manufacturing errors: after calibration every one
is within the as-left limits at every depth point and every speed level it can run."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from _cal_helpers import SIM_TODAY, StepClock, bench

from micropen.host.calibration import (
    CalibrationRecord,
    Outcome,
    Quantity,
    RecordStore,
    Stage,
    Verdict,
    run_calibration,
)
from micropen.host.connection import AsyncPen
from micropen.protocol import limits as L
from micropen.protocol.messages import SimParam

SEEDS = range(50)
BATCH = 25  # pens calibrated at once on one event loop (in the loop's virtual time)


async def _calibrate(seed: int, store: RecordStore) -> tuple[CalibrationRecord, list[int]]:
    pen = await AsyncPen.open(f"sim://?seed={seed}")
    try:
        errors = [
            await pen.sim_get(p)
            for p in (SimParam.DEPTH_GAIN_ERROR_PPM, SimParam.DEPTH_OFFSET_ERROR_UM)
        ]
        record = await run_calibration(
            pen, "all", await bench(pen), store=store, clock=StepClock(), today=SIM_TODAY
        )
        return record, errors
    finally:
        await pen.close()


@pytest.mark.slow
@pytest.mark.looptime  # virtual time: 25 pens on one loop never starve each other's watchdog
async def test_fifty_units_all_within_as_left_limits(tmp_path: Path) -> None:
    store = RecordStore(tmp_path / "calibration.sqlite")
    results: list[tuple[CalibrationRecord, list[int]]] = []
    for start in range(0, len(SEEDS), BATCH):
        batch = SEEDS[start : start + BATCH]
        results += await asyncio.gather(*(_calibrate(seed, store) for seed in batch))
    failed_as_found = 0
    for record, (gain_ppm, offset_um) in results:
        assert record.outcome is Outcome.PASS, (record.pen.serial, record.reason)
        depth = record.stage_points(Stage.AS_LEFT, Quantity.DEPTH)
        rate = record.stage_points(Stage.AS_LEFT, Quantity.RATE)
        assert [p.set_value for p in depth] == [0.25, 0.5, 1.0, 1.5, 2.0, 2.5]
        assert len(rate) >= 4
        assert all(abs(p.error) <= L.DEPTH_AS_LEFT_TOL_UM / 1000 for p in depth)
        assert all(abs(p.error) <= L.RATE_AS_LEFT_TOL_PCT for p in rate)
        # a unit whose errors put 2.5 mm more than 0.1 mm off must have failed as-found
        if abs(2500 * gain_ppm / 1e6 + offset_um) > 110:
            assert record.stage_verdict(Stage.AS_FOUND) is Verdict.FAIL
        failed_as_found += record.stage_verdict(Stage.AS_FOUND) is Verdict.FAIL
    assert failed_as_found >= 10  # the seeds do give calibration something to find
    assert len(store.history()) == len(SEEDS)
