"""The host session as a state machine: runs, cable pulls, reboots, e-stops and queries in any
order, against the in-process simulator in virtual time.

After every step: nothing is left pending, no run of ours is left going, the pen is not running
on its own, every run that reported did so with exactly the strokes asked for, and the
treatment log holds every report once with the pen's count.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import tempfile
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar

import looptime
import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from micropen.host import AsyncPen
from micropen.host.errors import ConnectionLost, HostError
from micropen.host.transports.sim import SimTransport
from micropen.host.treatment_log import TreatmentLog
from micropen.protocol.messages import PenState, RunOutcome, SimParam

T = TypeVar("T")
STEP_LIMIT_S = 60.0  # virtual seconds any one step may take


class HostSession(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.loop = looptime.new_event_loop()
        self.loop.setup_looptime(_enabled=True)
        self.folder = Path(tempfile.mkdtemp(prefix="micropen-session-"))
        self.log_path = self.folder / "log.sqlite"
        self.pen = self._do(AsyncPen.open("sim://?seed=3", log=self.log_path, command_timeout=5))
        self.reports: dict[tuple[int, int], int] = {}  # (boot id, run id) → strokes

    def _do(self, coro: Coroutine[Any, Any, T]) -> T:
        async def bounded() -> T:
            async with asyncio.timeout(STEP_LIMIT_S):
                return await coro

        return self.loop.run_until_complete(bounded())

    @property
    def _sim(self) -> SimTransport:
        assert isinstance(self.pen.transport, SimTransport)
        return self.pen.transport

    # ------------------------------------------------------------------ what a host does
    @rule(strokes=st.integers(1, 150), rate=st.sampled_from([50, 70, 90]))
    def a_run(self, strokes: int, rate: int) -> None:
        report = self._do(
            self.pen.run(depth_mm=0.5, rate_sps=rate, area="forehead", strokes=strokes)
        )
        assert (report.outcome, report.strokes) == (RunOutcome.COMPLETED, strokes)
        assert self.pen.identity is not None
        self.reports[(self.pen.identity.boot_id, report.run_id)] = report.strokes

    @rule(after=st.integers(1, 60))
    def a_run_is_interrupted(self, after: int) -> None:
        """Ctrl-C (a cancel) mid-run: the host stops the pen and collects its exact count."""

        async def interrupt() -> None:
            run = asyncio.create_task(
                self.pen.run(depth_mm=0.5, rate_sps=90, area="forehead", strokes=5000)
            )
            async with asyncio.timeout(5):
                while self._sim.pen.state is not PenState.RUNNING or (
                    int(self._sim.pen.physics.phase) < after
                ):
                    await asyncio.sleep(0.001)
            run.cancel()
            with pytest.raises(asyncio.CancelledError):
                await run

        self._do(interrupt())
        report = self.pen.runs.last_report
        assert report is not None and self.pen.identity is not None
        assert report.outcome is RunOutcome.STOPPED and after <= report.strokes < 5000
        self.reports[(self.pen.identity.boot_id, report.run_id)] = report.strokes

    @rule(ms=st.sampled_from([1200, 3000]))
    def a_run_loses_its_link(self, ms: int) -> None:
        """The cable is out longer than the watchdog: the pen stops by itself; its report
        reaches the host (and the log) when the link is back."""

        async def cut() -> None:
            run = asyncio.create_task(
                self.pen.run(depth_mm=0.5, rate_sps=90, area="forehead", seconds=20)
            )
            async with asyncio.timeout(5):
                while self._sim.pen.state is not PenState.RUNNING:
                    await asyncio.sleep(0.001)
            with self._sim._lock:
                self._sim.pen.set_param(SimParam.DISCONNECT, ms, self._sim.now())
            with contextlib.suppress(ConnectionLost):  # the wait may end before the link is back
                await run
            await self.pen.status()  # the report is handed over before this is answered
            await self.pen.clear_fault()

        self._do(cut())
        report = self.pen.runs.last_report
        assert report is not None and self.pen.identity is not None
        assert report.outcome is RunOutcome.WATCHDOG
        self.reports[(self.pen.identity.boot_id, report.run_id)] = report.strokes

    @rule()
    def a_status(self) -> None:
        status = self._do(self.pen.status())
        assert status.state in (PenState.IDLE, PenState.STOPPING, PenState.FAULT)

    @rule(ms=st.sampled_from([100, 400, 900, 1800]))
    def the_cable_is_pulled(self, ms: int) -> None:
        with self._sim._lock:
            self._sim.pen.set_param(SimParam.DISCONNECT, ms, self._sim.now())
        self._do(self.pen.status())  # answered once the line is back

    @rule()
    def the_pen_reboots(self) -> None:
        before = self.pen.identity
        with self._sim._lock:
            self._sim.pen.power_cycle(self._sim.now())
        self._do(self.pen.wait_connected(STEP_LIMIT_S / 2))
        self._do(self.pen.status())
        assert self.pen.identity is not None and before is not None
        assert self.pen.identity.boot_id != before.boot_id
        assert self.pen.identity.serial == before.serial

    @rule()
    def emergency_stop_and_clear(self) -> None:
        self._do(self.pen.emergency_stop())
        assert self._do(self.pen.status()).state is PenState.FAULT
        self._do(self.pen.clear_fault())

    # ------------------------------------------------------------------ what must always hold
    @invariant()
    def nothing_is_left_pending(self) -> None:
        assert len(self.pen.requests) == 0
        assert not self.pen.runs.owns_a_run

    @invariant()
    def the_pen_is_not_running_on_its_own(self) -> None:
        assert self._sim.pen.state is not PenState.RUNNING

    def teardown(self) -> None:
        try:
            self._do(self.pen.close())
            with TreatmentLog(self.log_path, readonly=True) as log:
                logged = {
                    (run.boot_id, run.run_id): run.strokes
                    for summary in log.sessions()
                    for run in log.session(summary.id).runs
                }
            assert logged == self.reports  # every report once, with the pen's count
        except HostError as exc:  # pragma: no cover - the assertion message says what
            pytest.fail(f"closing the session failed: {exc}")
        finally:
            self.loop.close()
            shutil.rmtree(self.folder, ignore_errors=True)


HostSession.TestCase.settings = settings(max_examples=12, stateful_step_count=12, deadline=None)
TestHostSession = HostSession.TestCase
