"""Run bookkeeping for one connection: which runs this host started, their reports, who waits.

Why a class of its own: a caller waiting for a run's end must always get an answer — the pen's
report, or a typed error when the report cannot come (the pen rebooted, the link stayed down
past the pen's watchdog, the connection failed for good). Keeping that promise in one place
keeps it out of the link pump. Reports are kept for the last :data:`KEEP_REPORTS` runs only.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict

from micropen.protocol.messages import RunOutcome, RunReport, Status

from .errors import PenTimeout, RunEndedElsewhere

__all__ = ["KEEP_REPORTS", "RunBook"]

KEEP_REPORTS = 64


class RunBook:
    """Runs started through one connection and their reports.

    A pen numbers its runs from 1 again after every boot, so reports, errors and waiters are
    kept per boot (``new_boot``): run 1 of this boot is never answered with run 1 of the last."""

    def __init__(self) -> None:
        self.active: set[int] = set()  # started here in this boot, not yet reported
        self.in_flight = False  # a Run was sent whose run id is not known yet
        self.slowest_retract_ms: int | None = None  # from the pen's RETRACTED events
        self.last_report: RunReport | None = None
        self._boot = 0  # a generation, not the pen's boot id
        self._reports: OrderedDict[tuple[int, int], RunReport] = OrderedDict()
        self._errors: dict[tuple[int, int], BaseException] = {}
        self._waiters: dict[tuple[int, int], asyncio.Event] = {}

    @property
    def owns_a_run(self) -> bool:
        """A run this connection started may be going: it is ours to stop."""
        return bool(self.active) or self.in_flight

    def new_boot(self) -> None:
        """The pen restarted: its run ids start again (fail the active runs first)."""
        self._boot += 1
        self.active.clear()
        self.in_flight = False

    def started(self, run_id: int) -> None:
        key = (self._boot, run_id)
        self.active.add(run_id)
        self.in_flight = False
        self._errors.pop(key, None)
        self._waiter(key)

    def reported(self, report: RunReport) -> None:
        """The pen's report arrived (whoever started the run)."""
        key = (self._boot, report.run_id)
        self._reports[key] = report
        self._reports.move_to_end(key)
        while len(self._reports) > KEEP_REPORTS:
            self._reports.popitem(last=False)
        self.active.discard(report.run_id)
        self._errors.pop(key, None)
        self.last_report = report
        self._waiter(key).set()

    def fail_active(self, error: BaseException, only: int | None = None) -> None:
        """The reports of the active runs (or of run ``only``) cannot reach this connection:
        wake their waiters with ``error``."""
        for run_id in [only] if only is not None else list(self.active):
            if run_id in self.active:
                key = (self._boot, run_id)
                self._errors[key] = error
                self._waiter(key).set()
                self.active.discard(run_id)

    def retracted(self, ms: int) -> None:
        """The pen reported the needles home ``ms`` after a stop."""
        self.slowest_retract_ms = max(self.slowest_retract_ms or 0, ms)

    def ended_elsewhere(self, status: Status) -> None:
        """After a reconnect the pen has handed this session every record it still held
        (before answering the handshake's GetStatus). A run of ours that is over by the pen's
        status and was not reported here was reported to another host session (the link was
        taken over meanwhile): its waiters get the pen's own count instead of waiting for ever."""
        for run_id in list(self.active):
            if status.run_id == run_id and status.run_outcome is RunOutcome.ACTIVE:
                continue
            strokes = status.run_strokes if status.run_id == run_id else None
            outcome = status.run_outcome.name.lower() if status.run_id == run_id else "ended"
            count = f"after {strokes} strokes " if strokes is not None else ""
            self.fail_active(
                RunEndedElsewhere(
                    f"run {run_id} ended ({outcome}) {count}while another host had the link; "
                    "that host received and logged its report — see micropen log list",
                    run_id,
                    strokes,
                ),
                only=run_id,
            )

    def report(self, run_id: int) -> RunReport | None:
        """The report of run ``run_id`` of the pen's current boot, if it came."""
        return self._reports.get((self._boot, run_id))

    async def wait(self, run_id: int, timeout: float | None = None) -> RunReport:
        """The report of ``run_id`` (of the current boot); raises the reason it cannot come,
        or PenTimeout."""
        key = (self._boot, run_id)
        waiter = self._waiter(key)
        try:
            async with asyncio.timeout(timeout):
                await waiter.wait()
        except TimeoutError:
            raise PenTimeout(f"run {run_id} did not end within {timeout} s") from None
        finally:
            if waiter.is_set():
                self._waiters.pop(key, None)
        report = self._reports.get(key)
        if report is not None:
            return report
        raise self._errors.pop(key)

    def _waiter(self, key: tuple[int, int]) -> asyncio.Event:
        waiter = self._waiters.get(key)
        if waiter is None:
            waiter = self._waiters[key] = asyncio.Event()
            if key in self._reports or key in self._errors:
                waiter.set()
        return waiter
