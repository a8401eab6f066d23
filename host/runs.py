"""Run bookkeeping for one connection: which runs this host started, their reports, who waits.

Why a class of its own: a caller waiting for a run's end must always get an answer — the pen's
report, or a typed error when the report cannot come (the pen rebooted, the link stayed down
past the pen's watchdog, the connection failed for good). Keeping that promise in one place
keeps it out of the link pump. Reports are kept for the last :data:`KEEP_REPORTS` runs only.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict

from micropen.protocol.messages import RunReport

from .errors import PenTimeout

__all__ = ["KEEP_REPORTS", "RunBook"]

KEEP_REPORTS = 64


class RunBook:
    """Runs started through one connection and their reports."""

    def __init__(self) -> None:
        self.active: set[int] = set()  # started here, not yet reported
        self.last_report: RunReport | None = None
        self._reports: OrderedDict[int, RunReport] = OrderedDict()
        self._errors: dict[int, BaseException] = {}
        self._waiters: dict[int, asyncio.Event] = {}

    def started(self, run_id: int) -> None:
        self.active.add(run_id)
        self._errors.pop(run_id, None)
        self._waiter(run_id)

    def reported(self, report: RunReport) -> None:
        """The pen's report arrived (whoever started the run)."""
        run_id = report.run_id
        self._reports[run_id] = report
        self._reports.move_to_end(run_id)
        while len(self._reports) > KEEP_REPORTS:
            self._reports.popitem(last=False)
        self.active.discard(run_id)
        self._errors.pop(run_id, None)
        self.last_report = report
        self._waiter(run_id).set()

    def fail_active(self, error: BaseException, only: int | None = None) -> None:
        """The reports of the active runs (or of run ``only``) cannot reach this connection:
        wake their waiters with ``error``."""
        for run_id in [only] if only is not None else list(self.active):
            if run_id in self.active:
                self._errors[run_id] = error
                self._waiter(run_id).set()
                self.active.discard(run_id)

    def report(self, run_id: int) -> RunReport | None:
        return self._reports.get(run_id)

    async def wait(self, run_id: int, timeout: float | None = None) -> RunReport:
        """The report of ``run_id``; raises the reason it cannot come, or PenTimeout."""
        waiter = self._waiter(run_id)
        try:
            async with asyncio.timeout(timeout):
                await waiter.wait()
        except TimeoutError:
            raise PenTimeout(f"run {run_id} did not end within {timeout} s") from None
        finally:
            if waiter.is_set():
                self._waiters.pop(run_id, None)
        report = self._reports.get(run_id)
        if report is not None:
            return report
        raise self._errors.pop(run_id)

    def _waiter(self, run_id: int) -> asyncio.Event:
        waiter = self._waiters.get(run_id)
        if waiter is None:
            waiter = self._waiters[run_id] = asyncio.Event()
            if run_id in self._reports or run_id in self._errors:
                waiter.set()
        return waiter
