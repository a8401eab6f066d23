"""The host's run, stop and log paths, each pinned by a test that fails when its line is broken.

A mutation run of the host (issue 11) found these behaviours unguarded — each mutant changed
what the host does and no test noticed: the log storing the target instead of the strokes
delivered, an override set through ``set_depth`` not logged, the pre-run re-check against a
stricter area removed, the wait for the needles to come home removed, the e-stop sent behind
queued commands instead of ahead of them. Numbers are the spec's (pen-spec.md), stated
literally. Runs in virtual time (tests/host/conftest.py).
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from _waits import delivering

from micropen.host import AsyncPen
from micropen.host.errors import SafetyLimitError
from micropen.host.treatment_log import TreatmentLog
from micropen.protocol.messages import RunOutcome


async def test_the_log_stores_the_strokes_delivered_not_the_target(tmp_path: Path) -> None:
    path = tmp_path / "log.sqlite"
    async with await AsyncPen.open("sim://?seed=3", log=path, command_timeout=5) as pen:
        run = asyncio.create_task(pen.run(depth_mm=0.5, rate_sps=90, area="forehead", strokes=5000))
        await delivering(pen, 40)
        run.cancel()  # Ctrl-C: the host stops the pen and collects its count
        with pytest.raises(asyncio.CancelledError):
            await run
        report = pen.runs.last_report
    assert report is not None and report.outcome is RunOutcome.STOPPED
    assert 40 <= report.strokes < 5000
    with TreatmentLog(path) as tlog:
        [summary] = tlog.sessions()
        [row] = tlog.session(summary.id).runs
    assert (row.strokes, row.target) == (report.strokes, 5000)


async def test_an_override_set_through_set_depth_is_logged(tmp_path: Path) -> None:
    path = tmp_path / "log.sqlite"
    async with await AsyncPen.open("sim://?seed=3", log=path) as pen:
        await pen.set_depth(1.8, area="cheeks", override_reason="deep acne scars, consented")
        await pen.set_depth(1.2, area="cheeks")  # within the 1.50 mm soft cap: no override
    with TreatmentLog(path) as tlog:
        [summary] = tlog.sessions()
        overrides = tlog.session(summary.id).overrides
    assert [(o.depth_um, o.area, o.reason) for o in overrides] == [
        (1800, "cheeks", "deep acne scars, consented")
    ]


async def test_a_run_is_checked_again_against_its_own_area_before_run_is_sent() -> None:
    """1.2 mm is fine on the cheeks (1.50 mm) but not on the forehead (0.75 mm): starting a
    forehead run with the depth set for the cheeks is refused by the host, before Run."""
    async with await AsyncPen.open("sim://?seed=3", log=False) as pen:
        await pen.set_depth(1.2, area="cheeks")
        await pen.set_rate(90, area="cheeks")
        sent = pen.counters["commands"]
        with pytest.raises(SafetyLimitError, match="forehead"):
            await pen.start_run(area="forehead", strokes=10)
        assert pen.counters["commands"] - sent == 1  # its status only: no Run
        assert pen.runs.last_report is None


async def test_a_run_right_after_a_run_waits_for_the_needles_home() -> None:
    """After a report the needles take up to 50 ms to come home (STOPPING); the next run
    starts once they are, instead of being refused."""
    async with await AsyncPen.open("sim://?seed=3", log=False) as pen:
        first = await pen.run(depth_mm=0.5, rate_sps=90, area="forehead", strokes=20)
        second = await pen.run(depth_mm=0.5, rate_sps=90, area="forehead", strokes=20)
    assert (first.outcome, second.outcome) == (RunOutcome.COMPLETED, RunOutcome.COMPLETED)
    assert second.run_id == first.run_id + 1


async def test_the_emergency_stop_jumps_every_queued_command() -> None:
    """300 queries queued, then an e-stop: it is answered before the queue drains."""
    async with await AsyncPen.open("sim://?seed=3", log=False, command_timeout=30) as pen:
        answered: list[str] = []

        async def query() -> None:
            await pen.status()
            answered.append("status")

        queries = [asyncio.create_task(query()) for _ in range(300)]
        await asyncio.sleep(0)  # every query is queued on the link
        await pen.emergency_stop()
        answered.append("estop")
        await asyncio.gather(*queries)
        assert answered.index("estop") < 100, f"e-stop answered after {answered.index('estop')}"
        await pen.clear_fault()


async def test_run_leaves_telemetry_as_it_found_it() -> None:
    """run() turns telemetry on for its rate check; it used to leave it on for good."""
    async with await AsyncPen.open("sim://?seed=3", log=False) as pen:
        await pen.run(depth_mm=0.5, rate_sps=90, area="forehead", strokes=20)
        assert pen.telemetry_hz == 0 and (await pen.status()).telemetry_hz == 0
        await pen.set_telemetry(50)
        await pen.run(depth_mm=0.5, rate_sps=90, area="forehead", strokes=20)
        assert (await pen.status()).telemetry_hz == 50
