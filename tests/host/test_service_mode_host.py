"""The host's side of service mode: a treatment run never uses the bench fixture, checked from
what the pen reports before anything is sent; ``service_mode()`` always leaves it again.
(The pen's own control: tests/sim/test_service_mode.py.)"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import looptime
import pytest

from micropen.host import AsyncPen
from micropen.host.errors import SafetyLimitError
from micropen.host.safety import check_area_mode, check_treatment_area, resolve_area
from micropen.protocol.messages import RunOutcome, SetServiceMode


@pytest.fixture
async def pen() -> AsyncIterator[AsyncPen]:
    with looptime.enabled():
        p = await AsyncPen.open("sim://?seed=4", log=False)
    yield p
    with looptime.enabled():
        await p.close()


def test_a_treatment_run_never_names_the_bench_fixture() -> None:
    with pytest.raises(SafetyLimitError, match="bench_fixture is the calibration fixture"):
        check_treatment_area(resolve_area("bench_fixture"))
    check_treatment_area(resolve_area("cheeks"))


def test_the_area_must_match_the_mode_the_pen_reports() -> None:
    fixture, cheeks = resolve_area("bench_fixture"), resolve_area("cheeks")
    with pytest.raises(SafetyLimitError, match="only in service mode"):
        check_area_mode(fixture, in_service=False)
    with pytest.raises(SafetyLimitError, match="is in service mode"):
        check_area_mode(cheeks, in_service=True)
    check_area_mode(fixture, in_service=True)
    check_area_mode(cheeks, in_service=False)


async def test_a_fixture_run_is_refused_by_the_host_before_sending(pen: AsyncPen) -> None:
    with pytest.raises(SafetyLimitError, match="only in service mode"):
        await pen.run(depth_mm=0.5, rate_sps=90, area="bench_fixture", strokes=10)
    assert (await pen.status()).run_id == 0  # no Run reached the pen


async def test_in_service_mode_the_fixture_runs_and_a_treatment_is_refused(pen: AsyncPen) -> None:
    async with pen.service_mode():
        assert (await pen.status()).service_mode == 1
        report = await pen.run(depth_mm=2.5, rate_sps=150, area="bench_fixture", strokes=30,
                               override_reason="bench calibration")  # fmt: skip
        assert report.outcome is RunOutcome.COMPLETED and report.strokes == 30
        with pytest.raises(SafetyLimitError, match="is in service mode"):
            await pen.run(depth_mm=0.5, rate_sps=90, area="forehead", strokes=10)
    assert (await pen.status()).service_mode == 0


async def test_service_mode_is_left_when_the_body_fails(pen: AsyncPen) -> None:
    with pytest.raises(RuntimeError, match="boom"):
        async with pen.service_mode():
            raise RuntimeError("boom")
    assert (await pen.status()).service_mode == 0


async def test_service_mode_is_left_when_the_body_is_cancelled(pen: AsyncPen) -> None:
    entered = asyncio.Event()

    async def body() -> None:
        async with pen.service_mode():
            entered.set()
            await asyncio.sleep(3600)

    task = asyncio.create_task(body())
    await entered.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert (await pen.status()).service_mode == 0


async def test_the_host_refuses_a_treatment_when_the_pen_says_service_mode(pen: AsyncPen) -> None:
    """Entered behind the host's back (a raw command): the host reads it from the status."""
    await pen._request(lambda c: SetServiceMode(c, 1))
    with pytest.raises(SafetyLimitError, match="is in service mode"):
        await pen.run(depth_mm=0.5, rate_sps=90, area="forehead", strokes=10)
    assert (await pen.status()).run_id == 0  # no Run reached the pen
