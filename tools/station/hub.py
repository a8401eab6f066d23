"""The pens the station drives: one open ``AsyncPen`` each, its live feed, its calibration job.

Everything here goes through the host API the CLI uses: ``AsyncPen.open`` (with the treatment
log), ``open_instruments`` and ``run_calibration`` with the same procedure objects, and the
same :data:`~micropen.host.calibration.instruments.Prompt` protocol ``micropen calibrate``
answers on a terminal — here a question is published to the browser and the answer posted
back. Nothing here re-implements a procedure step, a range check or a stop.

All of it runs on the web server's one event loop; nothing blocks it (database reads, PDF
rendering and signing run in worker threads), so a stop request is served at once even while
a calibration runs or other requests are slow.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any

from micropen.host.calibration import (
    DecisionRule,
    Instrument,
    ProgressEvent,
    Quantity,
    RecordStore,
    Settings,
    Station,
    check_due,
    check_spec,
    close_instruments,
    open_instruments,
    quantities_of,
    run_calibration,
)
from micropen.host.calibration.procedure import PROCEDURES, canceller_says
from micropen.host.calibration.record import CalibrationRecord, PointResult
from micropen.host.connection import AsyncPen, ConnectionNotice
from micropen.host.errors import HostError, InvalidInput
from micropen.host.tasks import cancel_and_wait
from micropen.protocol.errors import MicropenError
from micropen.protocol.messages import (
    Event,
    FaultCode,
    FaultReport,
    PenState,
    RunReport,
    Status,
    Telemetry,
)

__all__ = ["HOME_UM", "CalibrationJob", "Channel", "PenHub", "PenSession", "StalePage"]

log = logging.getLogger("micropen.station")

LIVE_HZ = 50  # telemetry the station asks for when it connects (a calibration raises it)
PUBLISH_EVERY_S = 0.1  # the browser gets at most 10 telemetry updates a second
HOME_UM = 10  # a telemetry depth at or below this reads "retracted" (as the HIL suite's)
STOP_WATCH_S = 2.0  # how long a stop waits for telemetry showing the needles home
QUEUE_MAX = 512
# why a calibration was cancelled, as its record says (the CLI's says "cancelled (Ctrl-C)")
STOPPED = "stopped with the stop button at the station"
ABORTED = "aborted at the station"
SHUT_DOWN = "the station was shut down"


class Channel:
    """Fan-out of JSON events to the browser connections watching one pen."""

    def __init__(self) -> None:
        self._queues: set[asyncio.Queue[dict[str, Any]]] = set()

    def subscribe(self) -> asyncio.Queue[dict[str, Any]]:
        queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue(QUEUE_MAX)
        self._queues.add(queue)
        return queue

    def unsubscribe(self, queue: asyncio.Queue[dict[str, Any]]) -> None:
        self._queues.discard(queue)

    def publish(self, event: dict[str, Any]) -> None:
        for queue in self._queues:
            if queue.full():  # a slow page loses its oldest update, never blocks the pen
                with contextlib.suppress(asyncio.QueueEmpty):
                    queue.get_nowait()
            queue.put_nowait(event)


def point_dict(point: PointResult) -> dict[str, Any]:
    return {
        "quantity": point.quantity.value,
        "stage": point.stage.value,
        "set": point.set_value,
        "units": point.units,
        "error": point.error,
        "error_units": point.error_units,
        "expanded": point.expanded,
        "decimals": point.uncertainty.decimals if point.uncertainty else 3,
        "tolerance": point.tolerance,
        "limit": point.limit_name,
        "verdict": point.verdict.value,
    }


@dataclass
class CalibrationJob:
    """One calibration the station started: the host's procedure running as a task."""

    id: int
    procedure: str
    gauge: str
    technician: str
    started: datetime = field(default_factory=lambda: datetime.now(UTC))
    task: asyncio.Task[CalibrationRecord | None] | None = None
    state: str = "starting"  # starting → running → done | aborted | failed
    rev: int = 0  # bumped at every published change: a page ignores older snapshots
    phase: str = ""
    messages: list[str] = field(default_factory=list)
    points: list[dict[str, Any]] = field(default_factory=list)
    prompt: dict[str, Any] | None = None
    record_id: str | None = None
    certificate: str | None = None
    outcome: str | None = None
    reason: str | None = None
    _answer: asyncio.Future[str] | None = None
    _prompt_ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    @property
    def active(self) -> bool:
        return self.state in ("starting", "running")

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "rev": self.rev,
            "procedure": self.procedure,
            "gauge": self.gauge,
            "technician": self.technician,
            "state": self.state,
            "phase": self.phase,
            "messages": self.messages[-200:],
            "points": self.points,
            "prompt": self.prompt,
            "record_id": self.record_id,
            "certificate": self.certificate,
            "outcome": self.outcome,
            "reason": self.reason,
        }


class StalePage(HostError):
    """A page names a pen (its serial) the station no longer has under that page's id."""


class PenSession:
    """One connected pen as the station sees it."""

    def __init__(self, pid: str, pen: AsyncPen, operator: str) -> None:
        self.pid = pid
        self.pen = pen
        self.operator = operator
        self.channel = Channel()
        self.sample: Telemetry | None = None
        self.status: Status | None = None
        self.last_fault: str | None = None
        self.link = "up"
        self.job: CalibrationJob | None = None
        self.last_stop: dict[str, Any] | None = None
        self._last_publish = 0.0
        self._last_state: PenState | None = None
        # a stop's watches on the telemetry: (from pen time, condition, the first sample that
        # meets it)
        self._watches: list[tuple[int, Callable[[Telemetry], bool], asyncio.Future[Telemetry]]] = []
        self._unsubscribe = pen.add_listener(self._on_message)

    # --- the pen's notifications -----------------------------------------------------------
    def _on_message(self, message: Any) -> None:
        if isinstance(message, Telemetry):
            self._on_sample(message)
        elif isinstance(message, FaultReport):
            self.last_fault = f"{message.fault.name} ({message.value})"
            self.channel.publish({"type": "fault", "fault": self.last_fault})
        elif isinstance(message, RunReport):
            self.channel.publish(
                {
                    "type": "run_report",
                    "run_id": message.run_id,
                    "outcome": message.outcome.name.lower(),
                    "strokes": message.strokes,
                }
            )
        elif isinstance(message, Event):
            self.channel.publish({"type": "event", "code": message.code.name.lower()})
        elif isinstance(message, ConnectionNotice):
            self.link = "up" if message.kind == "reconnected" else message.kind
            self.channel.publish({"type": "link", "link": self.link, "detail": message.detail})

    def _on_sample(self, sample: Telemetry) -> None:
        self.sample = sample
        for since, condition, found in self._watches:
            if not found.done() and sample.t_ms >= since and condition(sample):
                found.set_result(sample)
        now = asyncio.get_running_loop().time()
        if sample.state is not self._last_state or now - self._last_publish >= PUBLISH_EVERY_S:
            self._last_state, self._last_publish = sample.state, now
            self.channel.publish({"type": "telemetry", **sample_dict(sample)})

    @property
    def serial(self) -> str:
        identity = self.pen.identity
        assert identity is not None
        return identity.serial

    # --- what the pages show ---------------------------------------------------------------
    def summary(self) -> dict[str, Any]:
        identity = self.pen.identity
        assert identity is not None
        status = self.status
        sample = self.sample
        return {
            "pid": self.pid,
            "url": self.pen.url,
            "simulated": self.pen.is_simulated,
            "serial": identity.serial,
            "model": identity.model,
            "firmware": f"{identity.firmware_major}.{identity.firmware_minor}."
            f"{identity.firmware_patch}",
            "link": self.link,
            "state": (
                sample.state if sample else status.state if status else PenState.IDLE
            ).name.lower(),
            "fault": status.fault.name.lower() if status else None,
            "last_fault": self.last_fault,
            "cartridge": status.cartridge_state.name.lower() if status else None,
            "calibrated": bool(status.calibrated) if status else None,
            "live": sample_dict(sample) if sample else None,
            "calibration": self.job.to_dict() if self.job else None,
            "last_stop": self.last_stop,
        }

    async def check_ready(self) -> None:
        """Before a calibration's first question: a pen that cannot be calibrated now is
        refused in words, with what to do (not protocol integers after all the questions)."""
        status = await self.refresh()
        if status.state is PenState.FAULT or status.fault is not FaultCode.NONE:
            fault = status.fault.name.lower().replace("_", " ")
            raise InvalidInput(
                f"pen {self.serial} has a latched fault ({fault}); remove its cause, press "
                "'Clear fault' on the pen's page, then start the calibration"
            )
        if status.state is not PenState.IDLE:
            state = status.state.name.lower()
            raise InvalidInput(
                f"pen {self.serial} is {state}, not idle; stop it (or wait for it to finish), "
                "then start the calibration"
            )
        if self.job is not None and self.job.active:
            raise InvalidInput(
                f"pen {self.pid} is already calibrating (job {self.job.id}); abort it first"
            )

    async def clear_fault(self) -> Status:
        """The latched fault cleared through the host API (the pen refuses while its cause
        remains: the error says so)."""
        await self.pen.clear_fault()
        status = await self.refresh()
        self.last_fault = None if status.fault is FaultCode.NONE else self.last_fault
        self.channel.publish({"type": "fault_cleared", "state": status.state.name.lower()})
        return status

    async def refresh(self) -> Status:
        self.status = await self.pen.status()
        return self.status

    # --- stop ------------------------------------------------------------------------------
    async def stop(self) -> dict[str, Any]:
        """The urgent stop, first and at once; then abort a calibration of this pen (its
        teardown makes the pen safe and stores the record as incomplete); then wait (bounded)
        for telemetry showing the needles home, timed on the pen's own clock."""
        loop = asyncio.get_running_loop()
        since = self.sample.t_ms if self.sample is not None else 0
        running = self.sample is not None and self.sample.state is PenState.RUNNING
        home: asyncio.Future[Telemetry] = loop.create_future()
        rest: asyncio.Future[Telemetry] = loop.create_future()
        self._watches = [
            (since, lambda s: s.state is not PenState.RUNNING and s.depth_um <= HOME_UM, home),
            (since, lambda s: s.state in (PenState.IDLE, PenState.FAULT), rest),
        ]
        started = loop.time()
        error = None
        try:
            await self.pen.stop()
        except MicropenError as exc:
            error = str(exc)
        acked_ms = (loop.time() - started) * 1000
        aborted = self.abort_calibration(STOPPED)
        result: dict[str, Any] = {
            "acknowledged_ms": round(acked_ms, 1),
            "was_running": running,
            "aborted_calibration": aborted,
            "error": error,
            "retract_ms": None,
            "state": "unknown",
            "depth_um": None,
        }
        try:
            async with asyncio.timeout(STOP_WATCH_S):
                at_home = await home
                if running:  # pen clock: the last sample before the stop → first one home
                    result["retract_ms"] = at_home.t_ms - since
                at_rest = await rest
            result["state"] = at_rest.state.name.lower()
            result["depth_um"] = at_rest.depth_um
        except TimeoutError:
            pass
        finally:
            self._watches = []
        self.last_stop = result
        self.channel.publish({"type": "stopped", **result})
        return result

    def abort_calibration(self, why: str) -> bool:
        job = self.job
        if job is None or not job.active or job.task is None:
            return False
        job.messages.append(f"abort: {why}")
        job.task.cancel(why)  # the procedure records why (not the CLI's "Ctrl-C")
        return True

    async def close(self) -> None:
        if self.job is not None and self.job.task is not None:
            self.abort_calibration(SHUT_DOWN)
            await cancel_and_wait([self.job.task])  # its teardown makes the pen safe first
        self._unsubscribe()
        await self.pen.close()


def sample_dict(sample: Telemetry) -> dict[str, Any]:
    return {
        "t_ms": sample.t_ms,
        "state": sample.state.name.lower(),
        "depth_mm": sample.depth_um / 1000,
        "rate_sps": sample.rate_csps / 100,
        "strokes": sample.run_strokes,
        "temperature_c": sample.temperature_dc / 10,
        "battery_v": sample.battery_mv / 1000,
        "cartridge_strokes": sample.cartridge_strokes,
    }


class PenHub:
    """The pens this station has open, and their calibrations."""

    def __init__(
        self,
        *,
        store_factory: Callable[[], RecordStore] = RecordStore,
        station: Station,
        log: Any = True,
    ) -> None:
        self.pens: dict[str, PenSession] = {}
        self._jobs = itertools.count(1)
        self._store_factory = store_factory
        self.station = station
        self._log = log
        self._lock = asyncio.Lock()

    async def connect(self, url: str, operator: str) -> PenSession:
        url = url.strip() or "auto"
        async with self._lock:
            for session in self.pens.values():
                if session.pen.url == url:
                    return session
            pen = await AsyncPen.open(url, log=self._log, operator=operator, purpose="station")
            try:
                serial = pen.identity.serial if pen.identity is not None else None
                for session in self.pens.values():
                    if session.serial == serial:  # one pen, two URL spellings: they would fight
                        raise InvalidInput(
                            f"pen {serial} is already connected as {session.pid} "
                            f"({session.pen.url}); use that one, or disconnect it first"
                        )
                await pen.set_telemetry(LIVE_HZ)
                # random, not a counter: after a restart a stale page's id names no pen (a
                # counter would hand it whichever pen now has that number)
                session = PenSession(f"p{secrets.token_hex(6)}", pen, operator)
                await session.refresh()
            except BaseException:
                await pen.close()
                raise
            self.pens[session.pid] = session
            return session

    def get(self, pid: str) -> PenSession:
        try:
            return self.pens[pid]
        except KeyError:
            raise InvalidInput(
                f"no pen {pid!r} is connected to this station; connect it on the pens page"
            ) from None

    def get_shown(self, pid: str, serial: Any) -> PenSession:
        """The pen under ``pid``, refused (:class:`StalePage`) when the page that asks shows
        another serial (its station was restarted, or the pen reconnected under another id)."""
        session = self.pens.get(pid)
        if serial is None or serial == "":
            return self.get(pid)
        shown = str(serial)
        if session is None:
            raise StalePage(
                f"this page shows pen {shown}; the station now has no pen under id {pid} "
                "— reload the pens page (the pen may still be running: use its own button)"
            )
        actual = session.serial
        if actual != shown:
            raise StalePage(
                f"this page shows pen {shown}; the station now has {actual} under that id — reload"
            )
        return session

    async def disconnect(self, pid: str) -> None:
        session = self.get(pid)
        del self.pens[pid]
        await session.close()

    async def stop_all(self) -> None:
        """The station is shutting down: every pen's urgent stop at once and every
        calibration aborted (its teardown makes the pen safe), before anything else."""
        sessions = list(self.pens.values())
        for session in sessions:
            session.abort_calibration(SHUT_DOWN)
        results = await asyncio.gather(
            *(session.pen.stop() for session in sessions), return_exceptions=True
        )
        for session, result in zip(sessions, results, strict=True):
            if isinstance(result, BaseException):
                log.warning("stop of %s at shutdown failed: %s", session.serial, result)

    async def close(self) -> None:
        for pid in list(self.pens):
            with contextlib.suppress(HostError):
                await self.disconnect(pid)

    def due(self, serial: str) -> dict[str, Any]:
        status = check_due(serial, store=self._store_factory())
        return {
            "state": status.state.value,
            "due": status.due.isoformat() if status.due else None,
            "message": status.message,
        }

    # --- calibration -----------------------------------------------------------------------
    def start_calibration(
        self,
        session: PenSession,
        *,
        procedure: str,
        gauge: str,
        technician: str,
        readings: int,
        decision_rule: str | None = None,
    ) -> CalibrationJob:
        """Check the choices (InvalidInput: nothing started), then run the host's procedure
        as a task; its progress, points and questions go to the pen's channel."""
        if procedure not in PROCEDURES:
            raise InvalidInput(f"unknown procedure {procedure!r}; valid: {', '.join(PROCEDURES)}")
        check_spec(gauge)
        if session.job is not None and session.job.active:
            raise InvalidInput(
                f"pen {session.pid} is already calibrating (job {session.job.id}); abort it first"
            )
        lab = self.station
        rule: DecisionRule = (
            DecisionRule.parse(decision_rule, None) if decision_rule else lab.decision_rule
        )
        settings = Settings(
            technician=technician,
            station=lab.station.get("name", ""),
            readings=readings,
            decision_rule=rule,
            owner=lab.owner_text(),
            issuer=lab.issuer(),
            certificate_prefix=lab.certificate_prefix,
        )
        settings.check()
        job = CalibrationJob(next(self._jobs), procedure, gauge, technician)
        session.job = job
        job.task = asyncio.create_task(self._calibrate(session, job, settings))
        session.channel.publish({"type": "calibration", "job": job.to_dict()})
        return job

    async def _calibrate(
        self, session: PenSession, job: CalibrationJob, settings: Settings
    ) -> CalibrationRecord | None:
        channel = session.channel

        def publish() -> None:
            job.rev += 1
            channel.publish({"type": "calibration", "job": job.to_dict()})

        def progress(event: ProgressEvent) -> None:
            job.phase = event.phase
            if event.point is not None:
                job.points.append(point_dict(event.point))
                channel.publish({"type": "point", "point": job.points[-1], "phase": event.phase})
            text = f"{event.phase}: {event.text}"
            job.messages.append(text)
            job.rev += 1
            channel.publish({"type": "progress", "phase": event.phase, "text": text})

        async def prompt(question: str) -> str:
            """The Prompt the procedure asks through: the question goes to the page, the
            answer comes back from the technician's POST (see :meth:`answer`)."""
            future: asyncio.Future[str] = asyncio.get_running_loop().create_future()
            job._answer = future
            job.prompt = {"id": next(job._prompt_ids), "question": question}
            publish()
            try:
                return await future
            finally:
                job.prompt, job._answer = None, None

        instruments: dict[Quantity, Instrument] = {}
        record: CalibrationRecord | None = None
        store = self._store_factory()
        identity = session.pen.identity
        assert identity is not None
        serial = identity.serial
        try:
            job.state = "running"
            publish()
            instruments = await open_instruments(
                job.gauge,
                quantities_of(job.procedure),
                bench=session.pen.bench,
                prompt=prompt,
                today=date.today(),
                register=self.station.register,
            )
            record = await run_calibration(
                session.pen,
                job.procedure,
                instruments,
                store=store,
                settings=settings,
                progress=progress,
            )
            job.state = "done"
        except asyncio.CancelledError as exc:
            # the procedure has made the pen safe and stored its record as incomplete
            job.state, job.outcome = "aborted", "incomplete"
            why = canceller_says(exc) or ABORTED  # the record's reason reads the same
            job.reason = f"{why}: the pen was stopped and made safe"
            await self._note_record(job, store, serial)
            publish()
            raise
        except MicropenError as exc:
            job.state, job.outcome, job.reason = "failed", "incomplete", str(exc)
            await self._note_record(job, store, serial)
        except Exception as exc:  # any error ends the job: never left "running"
            log.exception("calibration job %s of %s ended on an unexpected error", job.id, serial)
            with contextlib.suppress(MicropenError):
                await session.pen.stop()  # the pen is made safe whatever the procedure did
            job.state, job.outcome = "failed", "incomplete"
            job.reason = (
                f"the calibration ended on an unexpected error ({type(exc).__name__}: {exc}); "
                "the pen was stopped and made safe — start a new calibration, and report this "
                "if it happens again"
            )
            await self._note_record(job, store, serial)
        finally:
            if instruments:
                with contextlib.suppress(MicropenError):
                    await close_instruments(instruments.values())
            with contextlib.suppress(MicropenError):
                await session.refresh()
        if record is not None:
            job.record_id, job.outcome, job.reason = (
                record.record_id,
                record.outcome.value,
                record.reason,
            )
            job.certificate = record.certificate_id
        publish()
        return record

    async def _note_record(self, job: CalibrationJob, store: RecordStore, serial: str) -> None:
        """The incomplete record the procedure stored for this job: the pen's newest, begun
        after the job (one job per pen at a time). None when it ended before the pen was
        touched (e.g. while the manual gauge's identity was asked)."""
        try:
            records = await asyncio.to_thread(store.history, serial)
        except MicropenError:
            return
        for record in records:
            if record.started_at >= job.started and record.procedure == job.procedure:
                job.record_id, job.certificate = record.record_id, record.certificate_id
                job.outcome, job.reason = record.outcome.value, f"{job.reason} ({record.reason})"
                return

    def answer(self, session: PenSession, prompt_id: int, text: str) -> None:
        job = session.job
        if job is None or job.prompt is None or job._answer is None:
            raise InvalidInput("no question is waiting for an answer; reload the page")
        if job.prompt["id"] != prompt_id:
            raise InvalidInput(
                f"answer to question {prompt_id}, but question {job.prompt['id']} is waiting; "
                "reload the page"
            )
        if not job._answer.done():
            job._answer.set_result(text)
