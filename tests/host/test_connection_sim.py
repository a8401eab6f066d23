"""AsyncPen against the in-process simulator: the API, the host's checks, reconnect, late
replies. The same API runs over pty, TCP and USB in test_transports_e2e.py."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import looptime
import pytest
from _waits import delivering, notices, pull_the_cable, until

from micropen.host import AsyncPen, open_pen
from micropen.host.errors import (
    ConnectionLost,
    PenRefused,
    PenTimeout,
    SafetyLimitError,
    SchemaMismatch,
)
from micropen.protocol import limits as L
from micropen.protocol.messages import (
    ErrorCode,
    GetStatus,
    PenState,
    RunOutcome,
    SetDepth,
    SimParam,
    Telemetry,
)


@pytest.fixture
async def pen() -> AsyncIterator[AsyncPen]:
    """Opened and closed in the test's virtual time (looptime leaves fixtures on the wall
    clock unless told, and the pen must see one clock)."""
    with looptime.enabled():
        p = await AsyncPen.open("sim://?seed=3")
    yield p
    with looptime.enabled():
        await p.close()


async def test_handshake_reports_identity(pen: AsyncPen) -> None:
    ident = pen.identity
    assert ident is not None
    assert ident.needle_count == 12
    assert ident.depth_max_um == L.DEPTH_MAX_UM
    assert ident.serial
    assert pen.is_simulated


async def test_run_bounded_by_strokes_reports_exact_count(pen: AsyncPen) -> None:
    samples: list[Telemetry] = []
    await pen.set_telemetry(50)
    report = await pen.run(
        depth_mm=0.5, rate_sps=90, area="forehead", strokes=150, on_telemetry=samples.append
    )
    assert report.outcome is RunOutcome.COMPLETED
    assert report.strokes == 150
    assert report.depth_um == 500 and report.rate_sps == 90
    assert samples, "telemetry flowed during the run"
    status = await pen.status()
    assert status.run_strokes == 150
    assert status.state in (PenState.STOPPING, PenState.IDLE)  # needles homing or home


async def test_run_bounded_by_duration(pen: AsyncPen) -> None:
    report = await pen.run(depth_mm=0.25, rate_sps=70, area="periorbital", seconds=0.5)
    assert report.outcome is RunOutcome.COMPLETED
    assert 0.9 * 35 <= report.strokes <= 1.1 * 35


async def test_host_refuses_before_sending(pen: AsyncPen) -> None:
    """A SafetyLimitError means nothing reached the pen: its command counter is unchanged."""
    before = pen.counters["commands"]
    with pytest.raises(SafetyLimitError, match="forehead maximum 0.75 mm"):
        await pen.run(depth_mm=1.0, rate_sps=90, area="forehead", strokes=10)
    with pytest.raises(SafetyLimitError, match="soft cap"):
        await pen.set_depth(2.0)
    assert pen.counters["commands"] == before


async def test_pen_refuses_on_its_own_when_host_check_is_bypassed(pen: AsyncPen) -> None:
    """The firmware enforces the soft cap itself (hazard 1), whatever the host sends."""
    with pytest.raises(PenRefused) as info:
        await pen._request(lambda c: SetDepth(c, 2000, 0))
    assert info.value.code is ErrorCode.SOFT_CAP_NEEDS_OVERRIDE


async def test_emergency_stop_while_running(pen: AsyncPen) -> None:
    await pen.set_depth(0.5)
    await pen.set_rate(90)
    await pen.status()
    run_id = await pen.start_run(area="forehead", seconds=30)
    await delivering(pen)
    await pen.emergency_stop()
    report = await pen.wait_run_end(run_id, timeout=2)
    assert report.outcome is RunOutcome.EMERGENCY_STOP
    status = await pen.status()
    assert status.state is PenState.FAULT
    await pen.clear_fault()
    assert (await pen.status()).state is PenState.IDLE


async def test_exception_during_run_stops_the_pen(pen: AsyncPen) -> None:
    async def cancel_soon() -> None:
        await delivering(pen)
        task.cancel()

    task = asyncio.create_task(pen.run(depth_mm=0.5, rate_sps=90, area="forehead", seconds=30))
    canceller = asyncio.create_task(cancel_soon())
    with pytest.raises(asyncio.CancelledError):
        await task
    await canceller
    status = await pen.status()
    assert status.state is not PenState.RUNNING
    assert status.run_outcome is RunOutcome.STOPPED


async def test_reconnect_after_link_drop_keeps_boot_and_reports(pen: AsyncPen) -> None:
    seen = notices(pen)
    boot = pen.identity.boot_id if pen.identity else 0
    pull_the_cable(pen, 1500)  # the simulated cable is out for 1.5 s
    await until(lambda: pen.counters["reconnects"], within=6, what="a reconnect")
    assert [n.kind for n in seen][:1] == ["lost"]
    assert "reconnected" in [n.kind for n in seen]
    assert pen.identity is not None and pen.identity.boot_id == boot
    assert (await pen.status()).state is PenState.IDLE


async def test_run_interrupted_by_disconnect_reports_exact_strokes(pen: AsyncPen) -> None:
    await pen.set_depth(0.5)
    await pen.set_rate(90)
    await pen.status()
    run_id = await pen.start_run(area="forehead", seconds=20)
    await delivering(pen, 10)
    pull_the_cable(pen, 1500)
    report = await pen.wait_run_end(run_id, timeout=8)
    assert report.outcome is RunOutcome.WATCHDOG
    status = await pen.status()
    assert status.run_id == run_id
    assert status.run_strokes == report.strokes > 0


async def test_late_reply_is_never_matched_to_another_request(pen: AsyncPen) -> None:
    await pen.sim_set(SimParam.LINK_DELAY_MS, 300)
    with pytest.raises(PenTimeout):
        await pen._request(lambda c: GetStatus(c), timeout=0.1)
    await pen.sim_set(SimParam.LINK_DELAY_MS, 0)
    status = await pen.status()
    assert status.cmd_id != 0
    await until(lambda: pen.counters["late_replies"], within=1.0, what="the late reply")


async def test_schema_mismatch_names_both_versions(monkeypatch: pytest.MonkeyPatch) -> None:
    import micropen.host.connection as conn

    monkeypatch.setattr(conn, "schema_hash", lambda: 0x12345678)
    with pytest.raises(SchemaMismatch) as info:
        await AsyncPen.open("sim://", reconnect=False)
    assert "12345678" in str(info.value)


def test_sync_facade_runs_and_keeps_heartbeat() -> None:
    """A script that blocks between calls must not trip the watchdog."""
    import time

    with open_pen("sim://?seed=4") as pen:
        pen.set_depth(0.5)
        pen.set_rate(90)
        pen.status()
        run_id = pen.start_run(area="forehead", seconds=1.0)
        time.sleep(0.8)  # the script is busy; the facade's loop thread keeps heartbeats going
        report = pen.wait_run_end(run_id, timeout=3)
    assert report.outcome is RunOutcome.COMPLETED
    with pytest.raises(ConnectionLost, match="closed"):  # a typed error, not "loop is closed"
        pen.status()
    pen.close()  # and closing twice is fine
