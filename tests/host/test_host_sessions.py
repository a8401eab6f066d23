"""The host's side of exactly-once and exact records across sessions (issue 10).

Each test here failed on the host before it opened sessions: a reply of the wrong type
resolved a request, another unit was driven after a reconnect, a command whose fate the pen
no longer knew was re-sent, a run cut short by a reboot stayed open in the log, and a log that
could not store a record still acknowledged it.
"""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest
from _waits import delivering, pull_the_cable, sim_of, until

from micropen.host import AsyncPen
from micropen.host.errors import (
    ConnectionLost,
    DifferentPen,
    HostError,
    OutcomeUnknown,
    PenNotReady,
    PenRebooted,
    RunEndedElsewhere,
)
from micropen.host.recorder import SessionRecorder
from micropen.host.treatment_log import LogNotWritable, TreatmentLog
from micropen.protocol import limits as L
from micropen.protocol.messages import (
    Ack,
    Identity,
    PenState,
    Run,
    RunMode,
    RunOutcome,
    RunReport,
    Status,
    Stop,
)
from micropen.sim.pen import SimConfig, SimulatedPen


async def test_a_reply_of_the_wrong_type_never_resolves_a_request() -> None:
    async with await AsyncPen.open("sim://?seed=3", log=False) as pen:
        query = asyncio.create_task(pen.status())
        # the request is registered before its frame leaves
        await until(lambda: pen.requests, within=1, what="the request", step=0)
        (cmd_id,) = pen.requests
        pen._on_message(Ack(cmd_id, 0))  # e.g. a stale cache entry answering a GetStatus
        assert isinstance(await query, Status)
        assert pen.counters["mismatched_replies"] == 1


async def test_a_reconnect_to_another_unit_is_refused() -> None:
    async with await AsyncPen.open("sim://?seed=3", log=False, command_timeout=5) as pen:
        transport = sim_of(pen)
        with transport._lock:  # another pen plugged into the same port
            transport.pen = SimulatedPen(SimConfig(seed=4), now=transport.now())
        with pytest.raises(DifferentPen, match="SIM-000004.*not SIM-000003"):
            await pen.status()
        with pytest.raises(DifferentPen):
            await pen.status()  # and it stays refused


async def test_an_unanswered_command_is_not_resent_once_the_pen_forgot_the_session() -> None:
    async with await AsyncPen.open("sim://?seed=3", log=False, command_timeout=5) as pen:
        transport = sim_of(pen)
        firmware = transport.pen.firmware
        pull_the_cable(pen, 1200)
        depth = asyncio.create_task(pen.set_depth(0.6))
        status = asyncio.create_task(pen.status())
        await until(lambda: len(pen.requests) == 2, within=1, what="both requests sent")
        for other in range(0xB000, 0xB004):  # four other hosts use the pen meanwhile
            firmware.replies.open(other)
        with pytest.raises(OutcomeUnknown, match="SetDepth.*status"):
            await depth
        assert isinstance(await status, Status)  # a query is always safe to repeat


async def test_a_resumed_session_gets_its_unanswered_command_answered_once() -> None:
    async with await AsyncPen.open("sim://?seed=3", log=False, command_timeout=5) as pen:
        pull_the_cable(pen, 1200)
        await pen.set_depth(0.6)  # sent into the outage; answered after the reconnect
        assert (await pen.status()).depth_set_um == 600
        assert pen.counters["reconnects"] == 1


async def test_a_run_cut_short_by_a_reboot_is_closed_as_interrupted(tmp_path: Path) -> None:
    path = tmp_path / "log.sqlite"
    async with await AsyncPen.open("sim://?seed=3", log=path, command_timeout=5) as pen:
        await pen.set_depth(0.5)
        await pen.set_rate(90)
        run_id = await pen.start_run(area="forehead", seconds=10)
        await delivering(pen, 10)
        transport = sim_of(pen)
        with transport._lock:
            transport.pen.power_cycle(transport.now())  # its RAM, and the report, are gone
        await pen.wait_connected(5)
        await pen.status()
    with TreatmentLog(path) as tlog:
        [summary] = tlog.sessions()
        detail = tlog.session(summary.id)
    [run] = detail.runs
    assert (run.run_id, run.outcome, run.strokes) == (run_id, "interrupted", None)
    codes = [(e.kind, e.code) for e in detail.events]
    assert ("link", "rebooted") in codes and ("host", "run_interrupted") in codes


async def test_a_full_disk_stops_the_pen_and_nothing_unrecorded_is_acknowledged(
    tmp_path: Path,
) -> None:
    full = TreatmentLog(tmp_path / "full.sqlite")
    pen = await AsyncPen.open("sim://?seed=3", recorder=SessionRecorder(full), command_timeout=5)
    sim_pen = sim_of(pen).pen
    try:
        await pen.set_telemetry(20)  # as `micropen run` does: samples are logged as they come
        run = asyncio.create_task(pen.run(depth_mm=0.5, rate_sps=90, area="forehead", seconds=8))
        await delivering(pen, 10)
        with full._lock:  # the disk fills: no page more can be written
            conn = full._live()
            pages = conn.execute("PRAGMA page_count").fetchone()[0]
            conn.execute(f"PRAGMA max_page_count = {pages}")
        with pytest.raises(LogNotWritable, match="disk is full"):
            async with asyncio.timeout(5):
                await run
        assert sim_pen.state is not PenState.RUNNING  # the host stopped it
    finally:
        await pen.close()
    # what the log could not take is still on the pen, for a host whose log can take it
    good = tmp_path / "good.sqlite"
    again = AsyncPen(
        sim_of(pen),
        keys=pen.keys,
        url="sim://?seed=3",
        recorder=SessionRecorder(TreatmentLog(good)),
    )
    await again._start()
    await again.status()
    await again.close()
    with sqlite3.connect(good) as conn:
        rows = conn.execute("SELECT outcome, strokes FROM runs").fetchall()
    assert len(rows) == 1 and rows[0][0] == RunOutcome.STOPPED.name and rows[0][1] > 0


async def test_a_run_whose_answer_was_lost_is_resolved_from_the_pens_state(
    tmp_path: Path,
) -> None:
    """A Run that executed while its answer went missing is adopted, not reported as "no
    answer": the caller gets the run's report and the log row has its area, depth and rate."""
    path = tmp_path / "log.sqlite"
    async with await AsyncPen.open("sim://?seed=3", log=path, command_timeout=0.5) as pen:
        deliver = pen._on_message

        def lose_the_runs_ack(message: object) -> None:
            pending = pen.requests.get(getattr(message, "cmd_id", -1))
            if isinstance(message, Ack) and pending and isinstance(pending.message, Run):
                return  # the reply vanished (the pen executed the Run)
            deliver(message)  # type: ignore[arg-type]

        pen._pump._on_message = lose_the_runs_ack  # type: ignore[method-assign]
        report = await pen.run(depth_mm=0.5, rate_sps=90, area="forehead", strokes=60)
    assert (report.outcome, report.strokes) == (RunOutcome.COMPLETED, 60)
    with TreatmentLog(path) as tlog:
        [summary] = tlog.sessions()
        [run] = tlog.session(summary.id).runs
    assert (run.area, run.depth_um, run.rate_sps, run.strokes) == ("forehead", 500, 90, 60)


# ------------------------------------------------------------------ every way out returns
class _BrokenRecorder(SessionRecorder):
    """A recorder hook with a bug (not a storage error): it raises on the run's report."""

    def on_notification(self, message: object) -> None:
        if isinstance(message, RunReport):
            raise RuntimeError("a bug in a hook")
        super().on_notification(message)


async def test_a_failing_hook_fails_the_run_promptly_and_stops_the_pen(tmp_path: Path) -> None:
    recorder = _BrokenRecorder(TreatmentLog(tmp_path / "log.sqlite"), owns_log=True)
    pen = await AsyncPen.open("sim://?seed=3", recorder=recorder, command_timeout=2)
    try:
        async with asyncio.timeout(10):
            with pytest.raises(HostError, match="failed internally.*RuntimeError"):
                await pen.run(depth_mm=0.5, rate_sps=90, area="forehead", strokes=40)
        assert pen.closed and not pen.connected
        assert sim_of(pen).pen.state is not PenState.RUNNING
    finally:
        await pen.close()


async def test_a_reboot_mid_run_ends_the_wait_with_pen_rebooted() -> None:
    async with await AsyncPen.open("sim://?seed=3", log=False, command_timeout=5) as pen:
        run = asyncio.create_task(pen.run(depth_mm=0.5, rate_sps=90, area="forehead", seconds=10))
        await until(lambda: pen.runs.active, within=2, what="the run started")
        transport = sim_of(pen)
        with transport._lock:
            transport.pen.power_cycle(transport.now())
        async with asyncio.timeout(5):
            with pytest.raises(PenRebooted, match="how many strokes it delivered is not known"):
                await run


async def test_a_pen_that_never_comes_back_ends_the_wait_after_its_watchdog() -> None:
    async with await AsyncPen.open("sim://?seed=3", log=False, command_timeout=5) as pen:
        run = asyncio.create_task(pen.run(depth_mm=0.5, rate_sps=90, area="forehead", seconds=30))
        await until(lambda: pen.runs.active, within=2, what="the run started")
        pull_the_cable(pen, 600_000)
        async with asyncio.timeout(10):  # watchdog 0.5 s + liveness + grace 2 s
            with pytest.raises(ConnectionLost, match="stopped on its own"):
                await run


async def test_a_slow_handshake_on_reconnect_is_retried_not_fatal() -> None:
    """Every Identity is lost for 2.5 s after a reconnect: the handshake fails — the Hello
    times out, or (since a pen sends no telemetry before Hello) the silent link is declared
    lost first — and the host tries again instead of giving up for good."""
    async with await AsyncPen.open("sim://?seed=3", log=False, command_timeout=10) as pen:
        await pen.set_telemetry(50)
        deliver = pen._on_message
        lose_until = asyncio.get_running_loop().time() + 3.4

        def lose_identities(message: object) -> None:
            if isinstance(message, Identity) and asyncio.get_running_loop().time() < lose_until:
                return
            deliver(message)  # type: ignore[arg-type]

        pen._pump._on_message = lose_identities  # type: ignore[method-assign]
        notices: list[str] = []
        pen.add_listener(lambda m: notices.append(str(getattr(m, "detail", ""))))
        pull_the_cable(pen, 900)  # then the host reconnects and must handshake again
        async with asyncio.timeout(15):
            await until(
                lambda: any("no answer to Hello" in n or "no frame from" in n for n in notices),
                within=10,
                what="a handshake failing",
            )
            await pen.wait_connected(10)
            assert isinstance(await pen.status(), Status)
        assert not pen.closed


async def test_run_reports_kept_are_bounded() -> None:
    async with await AsyncPen.open("sim://?seed=3", log=False) as pen:
        for run_id in range(1, 200):
            pen.runs.reported(RunReport(run_id, RunOutcome.COMPLETED, RunMode.STROKES, 1, 1, 1,
                                        1, 500, 90, 1))  # fmt: skip
        assert pen.runs.report(199) is not None and pen.runs.report(1) is None


async def test_bad_frames_are_counted_but_logged_rarely(caplog: pytest.LogCaptureFixture) -> None:
    async with await AsyncPen.open("sim://?seed=3", log=False) as pen:
        with caplog.at_level("WARNING", logger="micropen.host"):
            for _ in range(500):
                pen._pump._count_bad_message("CRC mismatch")
        assert pen.counters["bad_messages"] == 500
        assert len([r for r in caplog.records if "bad message" in r.getMessage()]) == 1


# ------------------------------------------------------------------ found by the review
async def test_a_refused_run_does_not_stop_a_run_that_is_not_ours() -> None:
    """A second `micropen run` refused because the pen was busy used to send Stop on its way
    out, stopping the other host's treatment."""
    async with await AsyncPen.open("sim://?seed=3", log=False) as pen:
        await pen.set_depth(0.5)
        await pen.set_rate(90)
        other = await pen.request(lambda c: Run(c, int(L.Area.FOREHEAD), RunMode.DURATION, 0, 5000))
        assert isinstance(other, Ack)  # a run this connection did not start through run()
        with pytest.raises(PenNotReady, match="running"):
            await pen.run(depth_mm=0.5, rate_sps=90, area="forehead", strokes=10)
        assert sim_of(pen).pen.state is PenState.RUNNING


async def test_a_run_reported_to_another_host_ends_the_wait_with_the_pens_count() -> None:
    """While the link was taken over, the run ended and another host received its report:
    the wait ends with the pen's own count instead of never."""
    async with await AsyncPen.open("sim://?seed=3", log=False, command_timeout=5) as pen:
        run = asyncio.create_task(pen.run(depth_mm=0.5, rate_sps=90, area="forehead", seconds=10))
        await until(lambda: pen.runs.active, within=2, what="the run started")
        transport = sim_of(pen)
        pull_the_cable(pen, 1000)
        with transport._lock:  # meanwhile another host stops the run and takes the report
            firmware = transport.pen.firmware
            firmware._on_stop(Stop(1), transport.now())
            firmware.link.take_unsent()
            firmware._held.clear()
            strokes = firmware.run.strokes
        async with asyncio.timeout(10):
            with pytest.raises(RunEndedElsewhere, match=f"stopped\\) after {strokes} strokes"):
                await run


async def test_run_1_after_a_reboot_is_not_answered_with_run_1_of_the_last_boot() -> None:
    """Found by the host-session state machine: the pen numbers runs from 1 again after a
    reboot, and the host answered the new run 1 at once with the old run 1's report (2
    strokes for a 1-stroke run, the real run left going and unlogged)."""
    async with await AsyncPen.open("sim://?seed=3", log=False, command_timeout=5) as pen:
        first = await pen.run(depth_mm=0.5, rate_sps=50, area="forehead", strokes=2)
        transport = sim_of(pen)
        with transport._lock:
            transport.pen.power_cycle(transport.now())
        assert (await pen.status()).run_id == 0  # a query is re-sent after the reconnect
        again = await pen.run(depth_mm=0.5, rate_sps=50, area="forehead", strokes=1)
        assert first.run_id == again.run_id == 1
        assert (again.outcome, again.strokes) == (RunOutcome.COMPLETED, 1)
        assert not pen.runs.owns_a_run


async def test_the_reboot_is_logged_before_anything_of_the_new_boot(tmp_path: Path) -> None:
    path = tmp_path / "log.sqlite"
    async with await AsyncPen.open("sim://?seed=3", log=path, command_timeout=5) as pen:
        transport = sim_of(pen)
        with transport._lock:
            transport.pen.power_cycle(transport.now())
        await pen.status()  # re-sent after the reconnect: the new boot's records came first
    with sqlite3.connect(path) as conn:
        kinds = [(k, c) for k, c in conn.execute("SELECT kind, code FROM events ORDER BY id")]
    booted = [i for i, row in enumerate(kinds) if row == ("event", "BOOTED")]
    assert len(booted) == 2, kinds  # one per boot
    assert booted[0] < kinds.index(("link", "rebooted")) < booted[1], kinds
