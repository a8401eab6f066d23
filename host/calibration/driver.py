"""Moving the pen for the bench: runs at a set point, settling from telemetry, safe teardown.

The pen extends its needles only while it runs, so every set point is measured during a run
(bounded in time, restarted if it ends on its own), with the set point changed while running
where the treatment-area rules allow it. Settling is read from the pen's own telemetry rather
than waited out with fixed sleeps: a depth is settled when the pen's depth sensor reads the set
depth, a stroke rate when the measured rate stops changing.

Runs go through the ordinary host API, so the host's and the pen's area and envelope checks
apply: depths above the soft cap carry an override reason. Every run is on the bench fixture,
which the pen allows only in service mode: the driver enters it when it opens and always leaves
it when it closes (and the pen ends it on its own if the host vanishes).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from micropen.host.connection import AsyncPen, ConnectionNotice
from micropen.host.errors import HostError
from micropen.protocol import limits as L
from micropen.protocol.messages import (
    FaultCode,
    FaultReport,
    PenState,
    RunOutcome,
    RunReport,
    Telemetry,
)

from .errors import CalibrationError

__all__ = [
    "DEPTH_SETTLE_UM",
    "OVERRIDE_REASON",
    "RATE_SETTLE_FRACTION",
    "Driver",
    "PenFaulted",
    "RunPlan",
    "make_safe",
    "plan_runs",
]

TELEMETRY_HZ = 200  # 5 ms between samples: settling is seen within a few ms
DEPTH_SETTLE_UM = 10  # the pen's depth sensor within this of the set depth (5 sigma of its noise)
RATE_SETTLE_FRACTION = 0.001  # 20 ms means of the measured rate agree within 0.1 %
RATE_WINDOW = 4  # samples per mean
SETTLE_TIMEOUT_S = 3.0
IDLE_TIMEOUT_S = 3.0
RUN_SECONDS = 300.0  # a bench run's bound; restarted if a slow (manual) sweep outlasts it
TEARDOWN_TIMEOUT_S = 5.0
OVERRIDE_REASON = "bench calibration: depth set point above the soft cap"
RATE_RUN_DEPTH_MM = L.DEPTH_PRESET_STEP_UM / 1000  # shallowest preset: least wear on the fixture


class PenFaulted(CalibrationError):
    """A fault stopped the pen during the procedure (it retracted and stopped on its own)."""


@dataclass(frozen=True)
class RunPlan:
    """One bench run: the area it is declared under, and the set points it visits."""

    area: L.Area
    depth_mm: float  # for a rate sweep: the fixed depth
    rate_sps: int  # for a depth sweep: the fixed rate
    points: tuple[float, ...]


BENCH_AREAS = (L.AREAS[L.Area.BENCH_FIXTURE],)  # service mode allows the fixture only


def plan_runs(
    kind: str, points: Sequence[float], areas: Iterable[L.AreaProfile] = BENCH_AREAS
) -> tuple[list[RunPlan], list[float]]:
    """Group set points into runs under areas that allow them; also the points none allows.

    Depth points need an area whose maximum (with the soft-cap override) reaches them; rate
    levels an area whose speed levels include them. Greedy: the area covering most of the
    remaining points first, so a sweep is as few runs as possible.
    """
    remaining, plans, areas = list(points), [], tuple(areas)
    while remaining:
        best: L.AreaProfile | None = None
        covered: list[float] = []
        for profile in areas:
            ok = [p for p in remaining if _allows(profile, kind, p)]
            if len(ok) > len(covered):
                best, covered = profile, ok
        if best is None:
            break
        if kind == "depth":
            plans.append(RunPlan(best.area, 0.0, min(best.allowed_rates()), tuple(covered)))
        else:
            plans.append(RunPlan(best.area, RATE_RUN_DEPTH_MM, 0, tuple(covered)))
        remaining = [p for p in remaining if p not in covered]
    return plans, remaining


def _allows(profile: L.AreaProfile, kind: str, point: float) -> bool:
    if kind == "depth":
        return round(point * 1000) <= profile.depth_limit_um(True)
    return int(point) in profile.allowed_rates() and profile.max_um >= RATE_RUN_DEPTH_MM * 1000


def runnable_rates(levels: Iterable[int] = L.RATE_LEVELS_SPS) -> tuple[int, ...]:
    """The speed levels the bench fixture allows (the pen refuses to run at the others)."""
    return tuple(r for r in levels if any(_allows(p, "rate", r) for p in BENCH_AREAS))


class Driver:
    """The pen as the bench drives it. Use as ``async with Driver(pen) as drv:``."""

    def __init__(self, pen: AsyncPen, *, settle_timeout: float = SETTLE_TIMEOUT_S) -> None:
        self.pen = pen
        self.settle_timeout = settle_timeout
        self._samples: asyncio.Queue[Telemetry] = asyncio.Queue(256)
        self._fault: FaultReport | None = None
        self._lost: str | None = None
        self._run_id: int | None = None
        self._ended: RunReport | None = None
        self._unsubscribe: Callable[[], None] | None = None
        self._telemetry_before = 0
        self._in_service = False

    async def open(self) -> None:
        """Listen to the pen, turn telemetry up for settling and enter service mode (both
        undone by close)."""
        self._unsubscribe = self.pen.add_listener(self._on_message)
        status = await self.pen.status()
        self._telemetry_before = status.telemetry_hz
        await self.pen.set_telemetry(TELEMETRY_HZ)
        self._in_service = True  # set first: a lost answer must still be undone by close
        await self.pen.enter_service_mode()

    async def close(self) -> None:
        """Leave service mode, stop listening, put telemetry back as it was (best effort:
        this is cleanup; a pen out of reach ends service mode itself at its watchdog)."""
        if self._in_service:
            self._in_service = False
            with contextlib.suppress(HostError, TimeoutError):
                async with asyncio.timeout(TEARDOWN_TIMEOUT_S):
                    await self.pen.leave_service_mode()
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None
            with contextlib.suppress(HostError, TimeoutError):
                async with asyncio.timeout(TEARDOWN_TIMEOUT_S):
                    await self.pen.set_telemetry(self._telemetry_before)

    async def __aenter__(self) -> Driver:
        await self.open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # --- notifications ----------------------------------------------------------------------
    def _on_message(self, message: Any) -> None:
        if isinstance(message, Telemetry):
            if self._samples.full():
                self._samples.get_nowait()
            self._samples.put_nowait(message)
        elif (
            isinstance(message, FaultReport) and message.fault is not FaultCode.CALIBRATION_CORRUPT
        ):
            self._fault = message  # (a corrupt calibration is a storage state, handled apart)
        elif isinstance(message, RunReport) and message.run_id == self._run_id:
            self._ended = message
        elif isinstance(message, ConnectionNotice) and message.kind in ("lost", "rebooted"):
            self._lost = f"link {message.kind}: {message.detail}"

    def check(self) -> None:
        """Raise if the pen faulted, rebooted or lost its link since the procedure began."""
        if self._fault is not None:
            fault = self._fault
            raise PenFaulted(
                f"the pen faulted ({fault.fault.name}, value {fault.value}) during calibration; "
                "it stopped and retracted on its own. Remove the cause, clear the fault "
                "(micropen clear-fault) and repeat the calibration"
            )
        if self._lost is not None:
            raise CalibrationError(
                f"{self._lost} during calibration; readings taken across it are not trusted. "
                "Check the cable and repeat the calibration"
            )

    @property
    def listening(self) -> bool:
        return self._unsubscribe is not None

    @property
    def running(self) -> bool:
        return self._run_id is not None and self._ended is None

    # --- runs -------------------------------------------------------------------------------------
    async def start_run(self, plan: RunPlan, depth_mm: float, rate_sps: int) -> None:
        """Start a bench run at this depth and rate (waiting for the pen to be idle first)."""
        await self.wait_idle()
        await self.pen.set_rate(rate_sps)
        await self._set_depth(depth_mm)
        await self.pen.status()  # start_run re-checks what is set against the area
        self._ended = None
        self._run_id = await self.pen.start_run(area=plan.area, seconds=RUN_SECONDS)

    async def ensure_running(self, plan: RunPlan, depth_mm: float, rate_sps: int) -> None:
        """Restart the bench run if it ended by its time bound (a slow manual sweep)."""
        self.check()
        if self.running:
            return
        if self._ended is not None and self._ended.outcome is not RunOutcome.COMPLETED:
            raise CalibrationError(
                f"the bench run ended early ({self._ended.outcome.name}); check the cartridge "
                "and the pen's status, then repeat the calibration"
            )
        await self.start_run(plan, depth_mm, rate_sps)

    async def stop(self) -> None:
        if self.running:
            await self.pen.stop()
        self._run_id, self._ended = None, None
        await self.wait_idle()

    async def move_depth(self, depth_mm: float) -> None:
        """Set a depth during the run and wait until the pen's sensor reads it (twice)."""
        await self._set_depth(depth_mm)
        target, hits = round(depth_mm * 1000), 0

        def settled(sample: Telemetry) -> bool:
            nonlocal hits
            hits = hits + 1 if abs(sample.depth_um - target) <= DEPTH_SETTLE_UM else 0
            return hits >= 2

        await self._wait_for(settled, f"depth {depth_mm:g} mm")

    async def change_rate(self, rate_sps: int) -> None:
        """Set a rate during the run and wait until the measured rate stops changing."""
        await self.pen.set_rate(rate_sps)
        rates: list[float] = []

        def settled(sample: Telemetry) -> bool:
            rates.append(sample.rate_csps / 100.0)
            if len(rates) < 2 * RATE_WINDOW:
                return False
            old = sum(rates[-2 * RATE_WINDOW : -RATE_WINDOW]) / RATE_WINDOW
            new = sum(rates[-RATE_WINDOW:]) / RATE_WINDOW
            return new > 0 and abs(new - old) <= RATE_SETTLE_FRACTION * rate_sps

        await self._wait_for(settled, f"stroke rate {rate_sps}/s")

    async def wait_idle(self) -> None:
        """Until the pen is at rest (needles home after a stop); a fault raises."""
        self.check()
        status = await self.pen.status()
        if status.state is PenState.FAULT and self._fault is None:
            self._fault = FaultReport(0, status.fault, 0, status.run_id)
        self.check()
        if status.state is not PenState.IDLE:
            await self._wait_for(lambda s: s.state is PenState.IDLE, "rest", running=False)

    async def wait_at_rest(self) -> None:
        """Until the pen is idle or in fault (where it accepts calibration writes); no raise
        for a fault, as this serves cleanup after one."""
        status = await self.pen.status()
        if status.state not in (PenState.IDLE, PenState.FAULT):
            self._fault = self._lost = None  # reported already; cleanup must go on
            await self._wait_for(
                lambda s: s.state in (PenState.IDLE, PenState.FAULT), "rest", running=False
            )

    async def _set_depth(self, depth_mm: float) -> None:
        over = round(depth_mm * 1000) > L.DEPTH_SOFT_CAP_UM
        await self.pen.set_depth(depth_mm, override_reason=OVERRIDE_REASON if over else None)

    async def _wait_for(
        self, settled: Callable[[Telemetry], bool], what: str, *, running: bool = True
    ) -> None:
        """Feed telemetry taken from now on to ``settled`` until it says yes, or time out."""
        while not self._samples.empty():
            self._samples.get_nowait()
        deadline = asyncio.get_running_loop().time() + self.settle_timeout
        while True:
            try:
                async with asyncio.timeout_at(deadline):
                    sample = await self._samples.get()
            except TimeoutError:
                self.check()
                raise CalibrationError(
                    f"the pen did not settle at {what} within {self.settle_timeout:.1f} s; "
                    "check the pen (telemetry) and the fixture, then repeat the calibration"
                ) from None
            self.check()
            if running and not self.running:
                raise CalibrationError(
                    f"the bench run ended while settling at {what} "
                    f"({self._ended.outcome.name if self._ended else '?'}); repeat the calibration"
                )
            if settled(sample):
                return


async def make_safe(pen: AsyncPen, driver: Driver | None = None) -> str:
    """Motor off and needles retracted, whatever happened; says what it could do.

    Stop (the pen brakes and retracts) and set depth 0; a pen in fault already did both. With
    a driver listening, wait until the pen reports it is at rest (needles home). If the pen
    cannot be reached, its heartbeat watchdog stops and retracts it on its own.
    """
    try:
        async with asyncio.timeout(TEARDOWN_TIMEOUT_S):
            await pen.stop()
            with contextlib.suppress(HostError):
                await pen.set_depth(0)
            if driver is not None and driver.listening:
                await driver.wait_at_rest()
            status = await pen.status()
    except (HostError, CalibrationError, TimeoutError) as exc:
        return (
            f"teardown could not confirm the pen is safe ({exc or 'timeout'}); its heartbeat "
            "watchdog stops the motor and retracts the needles on its own if the link is down"
        )
    if status.state is PenState.RUNNING:  # cannot happen after an acknowledged Stop
        return "teardown: the pen still reports RUNNING after Stop; switch it off by hand"
    state = status.state.name.lower()
    return f"teardown: motor off, needles retracted (depth set 0), pen {state}"
