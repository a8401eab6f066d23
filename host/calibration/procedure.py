"""Calibration procedures declared as data, and the runner that executes them.

A procedure is a tuple of :class:`Phase` records (OpenHTF-like): each names its action, the
quantity and stage it measures, the limit its points are judged against and how often a bad
reading is retaken. :data:`PROCEDURES` holds the four the CLI offers::

    depth   prepare → depth as-found → fit → write/verify/commit → depth as-left
    rate    prepare → rate as-found → fit → write/verify/commit → rate as-left
    all     prepare → both as-found → both fits → one write/verify/commit → both as-left
    verify  prepare → both as-found (acceptance limits); writes nothing

Each point's error is stated with its expanded uncertainty (:mod:`.uncertainty`) and judged
by the decision rule in the settings (:mod:`.decision`); the outcome is the worst statement of
the final stage. The runner guarantees, whatever happens (a failed point, a pen fault, a
dropped link, a gauge that disconnects, Ctrl-C): the teardown runs shielded from
cancellation (motor off, needles retracted), the pen keeps a calibration only if it was
verified as-left (otherwise the previous one is written back), and the record is stored
with its outcome and reason.
"""

from __future__ import annotations

import asyncio
import importlib.metadata
import math
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime

from micropen.host.connection import AsyncPen
from micropen.host.errors import HostError, InvalidInput, PenRefused
from micropen.host.tasks import shielded
from micropen.protocol.messages import (
    CalBank,
    CalData,
    Capability,
    CartridgeState,
    ErrorCode,
    PenState,
)

from .driver import Driver, RunPlan, make_safe, plan_runs, runnable_rates
from .errors import CalibrationError, CalibrationStorageError, ReadingOutOfRange
from .fit import CalValues, Line, corrected_depth, corrected_rate, fit_line, fit_slope
from .instruments import Instrument, check_instruments, plausible
from .measurements import (
    DEPTH_ACCEPTANCE,
    DEPTH_AS_LEFT,
    RATE_ACCEPTANCE,
    RATE_AS_LEFT,
    Limit,
    Quantity,
    Stage,
    Verdict,
    worst,
)
from .record import (
    BankSnapshot,
    CalibrationRecord,
    FitResult,
    InstrumentRef,
    Outcome,
    PenInfo,
    PhaseLog,
    PointResult,
)
from .records import RecordStore
from .settings import (
    DEPTH_POINTS_MM,
    METHOD_REVISION,
    METHODS,
    READINGS_DEFAULT,
    Settings,
)
from .uncertainty import Ambient, evaluate_point

__all__ = [
    "DEPTH_POINTS_MM",
    "METHODS",
    "METHOD_REVISION",
    "PROCEDURES",
    "READINGS_DEFAULT",
    "Phase",
    "Progress",
    "ProgressEvent",
    "Session",
    "Settings",
    "canceller_says",
    "quantities_of",
    "run_calibration",
    "software_version",
]


@dataclass(frozen=True)
class ProgressEvent:
    phase: str
    text: str
    point: PointResult | None = None


Progress = Callable[[ProgressEvent], None]
Clock = Callable[[], datetime]


@dataclass(frozen=True)
class Phase:
    """One step of a procedure, as data."""

    name: str
    action: Callable[[Session, Phase], Awaitable[None]]
    quantity: Quantity | None = None
    stage: Stage | None = None
    limit: Limit | None = None
    retries: int = 0  # retakes of a point after an implausible reading (Settings may raise it)


# --- the session: state shared by the phases ------------------------------------------------------
@dataclass
class Session:
    pen: AsyncPen
    driver: Driver
    instruments: Mapping[Quantity, Instrument]
    record: CalibrationRecord
    settings: Settings
    clock: Clock
    progress: Progress
    ambient: Ambient = field(default_factory=lambda: Ambient(None, "none"))  # for the budget
    baseline: CalValues = field(default_factory=CalValues)  # what is in force before writing
    proposed: CalValues | None = None
    restore_bank: CalData | None = None  # the previous calibration, to write back on failure

    def say(self, phase: str, text: str, point: PointResult | None = None) -> None:
        self.progress(ProgressEvent(phase, text, point))

    def note(self, text: str) -> None:
        self.record.notes.append(text)


# --- phase actions --------------------------------------------------------------------------------
async def prepare(session: Session, phase: Phase) -> None:
    """Check the pen can be calibrated and record what it has now."""
    pen = session.pen
    identity = pen.identity
    assert identity is not None
    writes = session.record.procedure != "verify"
    if writes and not identity.capabilities & Capability.CALIBRATION_STORAGE:
        raise CalibrationError(
            f"pen {identity.serial} has no calibration storage; it can only be verified "
            "(micropen calibrate verify)"
        )
    status = await pen.status()
    if status.state is PenState.FAULT:
        raise CalibrationError(
            f"the pen is in fault ({status.fault.name}); remove the cause, clear it "
            "(micropen clear-fault) and repeat"
        )
    if status.state is not PenState.IDLE:
        raise CalibrationError(
            f"the pen is {status.state.name.lower()}; stop it and let it come to rest first"
        )
    if status.cartridge_state not in (CartridgeState.NEW, CartridgeState.LOCKED):
        raise CalibrationError(
            f"cartridge {status.cartridge_state.name.lower()}: the pen runs during calibration; "
            "mount a usable (calibration) cartridge and repeat"
        )
    _record_ambient(session, status.temperature_dc / 10)
    active = await pen.cal_read(CalBank.ACTIVE)
    session.record.cal_before = _snapshot(active)
    if active.valid:
        session.baseline, session.restore_bank = _values(active), active
    elif not writes:
        raise CalibrationError(
            "the pen's active calibration is blank or corrupt: it must be calibrated, not "
            "verified (micropen calibrate all)"
        )
    else:
        session.note(
            "the pen's active calibration was blank or corrupt; a nominal (zero) correction "
            "was committed so the pen can run for the as-found readings"
        )
        await _write_verify_commit(session, CalValues(), active.counter)
        session.restore_bank = await pen.cal_read(CalBank.ACTIVE)
    session.say(phase.name, f"pen {identity.serial} ready; calibration counter {active.counter}")


def _record_ambient(session: Session, pen_celsius: float) -> None:
    """The ambient temperature, how and where it was measured (certificate §7.8.4.1 b)."""
    rec, where = session.record, session.settings.issuer.location or "the calibration bench"
    if session.settings.ambient_c is not None:
        rec.ambient_c, rec.ambient_source = session.settings.ambient_c, "entered by technician"
        rec.ambient_location = f"room thermometer read by the technician at {where}"
        session.ambient = Ambient(rec.ambient_c, "entered")
    else:
        rec.ambient_c, rec.ambient_source = pen_celsius, "pen sensor at rest"
        rec.ambient_location = f"the pen's own temperature sensor, pen at rest at {where}"
        session.ambient = Ambient(rec.ambient_c, "pen")


async def measure_sweep(session: Session, phase: Phase) -> None:
    """Every set point of one quantity: settle, read, judge against the phase's limit."""
    assert phase.quantity is not None and phase.stage is not None and phase.limit is not None
    quantity, settings = phase.quantity, session.settings
    points: Sequence[float]
    if quantity is Quantity.DEPTH:
        points = settings.depth_points_mm
    else:
        points = runnable_rates(settings.rate_levels_sps)
        skipped = [r for r in settings.rate_levels_sps if r not in points]
        if skipped and phase.stage is Stage.AS_FOUND:
            session.note(
                f"stroke rates {', '.join(map(str, skipped))}/s not measured: no treatment area "
                "allows them, so the pen refuses to run there; the rate correction is one gain, "
                f"fitted and verified at {', '.join(map(str, points))}/s"
            )
    plans, unreachable = plan_runs(quantity.value, points)
    if unreachable:
        raise CalibrationError(
            f"{quantity.value} set points {unreachable} are allowed by no treatment area, so "
            "the pen cannot run there; choose set points within the areas' limits"
        )
    drv = session.driver
    for plan in plans:
        for set_value in plan.points:
            depth = set_value if quantity is Quantity.DEPTH else plan.depth_mm
            rate = plan.rate_sps if quantity is Quantity.DEPTH else int(set_value)
            session.say(phase.name, f"set {set_value:g} {quantity.set_units}")
            point = await _measure_point(session, phase, plan, depth, rate, set_value)
            session.record.points.append(point)
            session.say(phase.name, describe(point), point)
        await drv.stop()


async def _measure_point(
    session: Session, phase: Phase, plan: RunPlan, depth: float, rate: int, set_value: float
) -> PointResult:
    assert phase.quantity is not None and phase.stage is not None and phase.limit is not None
    drv, quantity = session.driver, phase.quantity
    instrument = session.instruments[quantity]
    retries = max(phase.retries, session.settings.retries)
    for attempt in range(retries + 1):
        await drv.ensure_running(plan, depth, rate)
        if quantity is Quantity.DEPTH:
            await drv.move_depth(depth)
        else:
            await drv.change_rate(rate)
        try:
            readings = []
            for _ in range(session.settings.readings):
                value = await instrument.read(set_value)
                readings.append(plausible(quantity, set_value, value))
        except ReadingOutOfRange as exc:
            if attempt == retries:
                raise
            session.say(phase.name, f"retaking {set_value:g}: {exc}")
            continue
        drv.check()
        if drv.running:  # the readings were taken while the pen held the set point
            return _judge(session, phase, set_value, readings)
    raise CalibrationError(
        f"the bench run kept ending while {quantity.value} {set_value:g} was read; repeat"
    )


def _judge(session: Session, phase: Phase, set_value: float, readings: list[float]) -> PointResult:
    """The point with its uncertainty budget, judged by the decision rule on the values as
    reported: the error rounded to the decimal place of U, U rounded up."""
    quantity, stage, limit = phase.quantity, phase.stage, phase.limit
    assert quantity is not None and stage is not None and limit is not None
    reference = session.instruments[quantity].info.calibration
    assert reference is not None  # check_instruments refused instruments without one
    error, budget = evaluate_point(quantity, set_value, readings, reference, session.ambient)
    reported = round(error, budget.decimals)
    verdict = session.settings.decision_rule.judge(reported, budget.expanded, limit.tolerance)
    mean = math.fsum(readings) / len(readings)
    return PointResult(
        quantity, stage, set_value, tuple(readings), mean, reported, limit.tolerance,
        limit.name, verdict, budget,
    )  # fmt: skip


async def fit_correction(session: Session, phase: Phase) -> None:
    """Least squares over the as-found means; the correction that cancels the line."""
    assert phase.quantity is not None
    quantity = phase.quantity
    points = session.record.stage_points(Stage.AS_FOUND, quantity)
    current = session.proposed or session.baseline
    if quantity is Quantity.DEPTH:
        line_um = fit_line([p.set_value * 1000 for p in points], [p.mean * 1000 for p in points])
        proposed = corrected_depth(current, line_um)
        line = Line(line_um.slope, line_um.intercept / 1000, line_um.max_residual / 1000)
    else:
        line = fit_slope([p.set_value for p in points], [p.mean for p in points])
        proposed = corrected_rate(current, line)
    session.proposed = proposed
    session.record.fits.append(  # in the quantity's own units: mm, strokes/s
        FitResult(quantity, line.slope, line.intercept, line.max_residual, current, proposed)
    )
    session.say(
        phase.name,
        f"{quantity.value}: measured = {line.slope:.5f} × set {line.intercept:+.4f} "
        f"{quantity.set_units}; new "
        f"correction: depth gain {proposed.depth_gain_ppm:+d} ppm, offset "
        f"{proposed.depth_offset_um:+d} µm, rate gain {proposed.rate_gain_ppm:+d} ppm",
    )


async def write_calibration(session: Session, phase: Phase) -> None:
    """Write to staging, read back and compare, commit, read back the active bank."""
    assert session.proposed is not None
    await session.driver.wait_idle()
    await _write_verify_commit(session, session.proposed, _last_counter(session))
    session.record.committed = True
    session.say(phase.name, f"committed calibration counter {_last_counter(session)}")


def _last_counter(session: Session) -> int:
    """The newest counter this session has seen on the pen."""
    bank = session.record.cal_after or session.record.cal_before
    return bank.counter if bank else 0


async def _write_verify_commit(session: Session, values: CalValues, last_counter: int) -> None:
    """The only path that changes the pen's calibration. Any mismatch stops before commit."""
    values.check()
    pen = session.pen
    written_at = int(session.clock().timestamp())
    counter = last_counter + 1
    for _ in range(2):  # a second try only when the pen names a higher counter floor
        crc = await pen.cal_write(
            depth_gain_ppm=values.depth_gain_ppm,
            depth_offset_um=values.depth_offset_um,
            rate_gain_ppm=values.rate_gain_ppm,
            counter=counter,
            written_at=written_at,
        )
        staged = await pen.cal_read(CalBank.STAGING)
        _expect_bank("staging", staged, values, counter, crc)
        try:
            await pen.cal_commit(crc)
        except PenRefused as exc:
            if exc.code is ErrorCode.CALIBRATION_DOWNGRADE and exc.limit >= counter:
                counter = exc.limit + 1
                continue
            raise
        active = await pen.cal_read(CalBank.ACTIVE)
        _expect_bank("active", active, values, counter, crc)
        session.record.cal_after = _snapshot(active)
        return
    raise CalibrationStorageError("the pen kept refusing the calibration counter; not committed")


def _expect_bank(bank: str, data: CalData, values: CalValues, counter: int, crc: int) -> None:
    got = (_values(data), data.counter, data.crc, bool(data.valid))
    want = (values, counter, crc, True)
    if got != want:
        raise CalibrationStorageError(
            f"the {bank} calibration bank reads back {got}, expected {want}; "
            + ("nothing was committed" if bank == "staging" else "the commit did not take")
            + ": check the pen's storage (micropen cal read) and repeat"
        )


# --- procedures as data ---------------------------------------------------------------------------
PREPARE = Phase("prepare", prepare)
WRITE = Phase("write, verify, commit", write_calibration)


def _sweep(quantity: Quantity, stage: Stage, limit: Limit) -> Phase:
    label = stage.value.replace("_", "-")
    return Phase(f"{quantity.value} {label}", measure_sweep, quantity, stage, limit, retries=2)


def _fit(quantity: Quantity) -> Phase:
    return Phase(f"{quantity.value} fit", fit_correction, quantity)


D, R = Quantity.DEPTH, Quantity.RATE
F, LEFT = Stage.AS_FOUND, Stage.AS_LEFT
PROCEDURES: dict[str, tuple[Phase, ...]] = {
    "depth": (
        PREPARE,
        _sweep(D, F, DEPTH_ACCEPTANCE),
        _fit(D),
        WRITE,
        _sweep(D, LEFT, DEPTH_AS_LEFT),
    ),
    "rate": (PREPARE, _sweep(R, F, RATE_ACCEPTANCE), _fit(R), WRITE, _sweep(R, LEFT, RATE_AS_LEFT)),
    "all": (
        PREPARE,
        _sweep(D, F, DEPTH_ACCEPTANCE),
        _sweep(R, F, RATE_ACCEPTANCE),
        _fit(D),
        _fit(R),
        WRITE,
        _sweep(D, LEFT, DEPTH_AS_LEFT),
        _sweep(R, LEFT, RATE_AS_LEFT),
    ),
    "verify": (PREPARE, _sweep(D, F, DEPTH_ACCEPTANCE), _sweep(R, F, RATE_ACCEPTANCE)),
}
del D, R, F, LEFT


def quantities_of(procedure: str) -> tuple[Quantity, ...]:
    phases = _procedure(procedure)
    return tuple(dict.fromkeys(p.quantity for p in phases if p.quantity is not None))


def _procedure(name: str) -> tuple[Phase, ...]:
    try:
        return PROCEDURES[name]
    except KeyError:
        raise InvalidInput(f"unknown procedure {name!r}; valid: {', '.join(PROCEDURES)}") from None


# --- the runner -----------------------------------------------------------------------------------
DEFAULT_SETTINGS = Settings()  # frozen: one shared default is safe


def _utc_now() -> datetime:
    return datetime.now(UTC)


def software_version() -> str:
    try:
        return importlib.metadata.version("micropen")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


async def run_calibration(
    pen: AsyncPen,
    procedure: str,
    instruments: Mapping[Quantity, Instrument],
    *,
    store: RecordStore,
    settings: Settings = DEFAULT_SETTINGS,
    clock: Clock = _utc_now,
    today: date | None = None,
    progress: Progress | None = None,
) -> CalibrationRecord:
    """Run one procedure on a connected pen and store its record (also when it fails).

    Bad input (settings, a missing or overdue instrument) raises InvalidInput before the pen
    is touched or a record is made. After that, errors end the procedure with the record
    marked incomplete and the reason; the record is returned. Cancellation (Ctrl-C) stores the
    record and re-raises.
    """
    phases = _procedure(procedure)
    settings.check()
    needed = quantities_of(procedure)
    missing = [q.value for q in needed if q not in instruments]
    if missing:
        raise InvalidInput(f"procedure {procedure!r} needs an instrument for {', '.join(missing)}")
    used = [instruments[q] for q in needed]
    started = clock()
    refs = check_instruments(used, today or started.date(), settings.override_instrument_due)
    record = _new_record(pen, procedure, settings, started)
    record.instruments = refs
    record.simulated_parts = _simulated_parts(pen, refs)
    for ref in refs:
        if ref.overdue:
            record.notes.append(
                f"{ref.role} instrument s/n {ref.serial} overdue since {ref.cal_due}; used under "
                f"override: {ref.override_reason}"
            )
    store.begin(record, settings.certificate_prefix)
    session = Session(
        pen, Driver(pen, settle_timeout=settings.settle_timeout_s), dict(instruments), record,
        settings, clock, progress or (lambda event: None),
    )  # fmt: skip
    try:
        await _run_phases(session, phases)
    finally:
        record.finished_at = clock()
        store.finish(record)
    return record


CTRL_C = "cancelled (Ctrl-C)"


def canceller_says(exc: asyncio.CancelledError) -> str | None:
    """The reason a canceller gave with ``task.cancel(msg)``, if any."""
    message = exc.args[0] if exc.args else None
    return message.strip() if isinstance(message, str) and message.strip() else None


def cancel_reason(exc: BaseException) -> str:
    """Why a procedure ended on ``exc``, as its record says: a canceller names its reason with
    ``task.cancel(msg)`` (the station: "stopped with the stop button at the station", …); a
    cancel without one, or Ctrl-C, is "cancelled (Ctrl-C)" (the CLI's only way to cancel)."""
    if isinstance(exc, asyncio.CancelledError):
        said = canceller_says(exc)
        return CTRL_C if said is None else f"cancelled: {said}"
    if isinstance(exc, KeyboardInterrupt):
        return CTRL_C
    return f"unexpected error {exc!r}"


async def _run_phases(session: Session, phases: Sequence[Phase]) -> None:
    record = session.record
    current = "start"
    try:
        await session.driver.open()
        for phase in phases:
            current = phase.name
            session.say(phase.name, "start")
            await phase.action(session, phase)
            record.phases.append(PhaseLog(phase.name, "pass", 1))
        _conclude(session)
    except (HostError, CalibrationError) as exc:
        record.phases.append(PhaseLog(current, "error", 1, str(exc)))
        record.outcome, record.reason = Outcome.INCOMPLETE, f"{current}: {exc}"
    except BaseException as exc:  # Ctrl-C, cancellation, or a bug: still safe and recorded
        what = cancel_reason(exc)
        record.phases.append(PhaseLog(current, "cancelled", 1, what))
        record.outcome, record.reason = Outcome.INCOMPLETE, f"{current}: {what}"
        raise
    finally:
        await shielded(_finish(session))


async def _finish(session: Session) -> None:
    """Teardown, then put the previous calibration back if the new one is not verified."""
    try:
        session.note(await make_safe(session.pen, session.driver))
        record = session.record
        if record.committed and not record.outcome.passed:  # a conditional pass is kept
            await _restore(session)
    finally:
        await session.driver.close()


async def _restore(session: Session) -> None:
    record, previous = session.record, session.restore_bank
    if previous is None:
        session.note(
            "the new calibration is not verified and there is no valid previous calibration "
            "to restore: do not use the pen until a calibration passes"
        )
        return
    try:
        await session.driver.wait_at_rest()  # the pen takes calibration writes only at rest
        await _write_verify_commit(session, _values(previous), _last_counter(session))
    except (HostError, CalibrationError, TimeoutError) as exc:
        session.note(
            f"could not restore the previous calibration ({exc}); the new, unverified "
            f"calibration (counter {record.cal_after.counter if record.cal_after else '?'}) is "
            "in force: do not use the pen until a calibration passes"
        )
        return
    record.committed = False
    session.note(
        "the new calibration was not verified as-left, so the previous values were written back "
        f"(counter {record.cal_after.counter if record.cal_after else '?'})"
    )


def _conclude(session: Session) -> None:
    """The overall statement: the worst verdict of the final stage, with the points behind it."""
    record = session.record
    final = record.stage_points(record.final_stage)
    verdict = worst(p.verdict for p in final)
    if verdict is None:
        record.outcome, record.reason = Outcome.INCOMPLETE, "no point was measured"
        return
    record.outcome = Outcome.of(verdict)
    label = record.final_stage.label

    def points(*verdicts: Verdict) -> str:
        return "; ".join(describe(p) for p in final if p.verdict in verdicts)

    if verdict is Verdict.FAIL:
        record.reason = f"{label} out of tolerance: " + points(Verdict.FAIL)
    elif verdict is Verdict.CONDITIONAL_FAIL:
        record.reason = (
            f"{label} conditional fail (beyond the limit by less than the guard band): "
            + points(Verdict.CONDITIONAL_FAIL)
        )
    else:
        record.reason = f"every {label} point within its limit"
        if verdict is Verdict.CONDITIONAL_PASS:
            record.reason += (
                " (conditional: within the limit by less than the guard band: "
                + points(Verdict.CONDITIONAL_PASS)
                + ")"
            )


def describe(point: PointResult) -> str:
    """``depth 2.5 mm: error +0.1170 ± 0.0034 mm (limit ±0.1 mm, fail)``."""
    decimals = point.uncertainty.decimals if point.uncertainty else 3
    spread = f" ± {point.expanded:.{decimals}f}" if point.expanded is not None else ""
    return (
        f"{point.quantity.value} {point.set_value:g} {point.units}: error "
        f"{point.error:+.{decimals}f}{spread} {point.error_units} (limit "
        f"±{point.tolerance:g} {point.error_units}, {point.verdict.label})"
    )


def _simulated_parts(pen: AsyncPen, refs: Sequence[InstrumentRef]) -> list[str]:
    """What in this calibration is not real, named for the certificate and the record."""
    identity = pen.identity
    assert identity is not None
    parts = [f"pen {identity.serial} ({pen.url})"] if pen.is_simulated else []
    parts += [f"{r.role} instrument {r.model} s/n {r.serial}" for r in refs if r.simulated]
    return parts


def _new_record(
    pen: AsyncPen, procedure: str, settings: Settings, started: datetime
) -> CalibrationRecord:
    identity = pen.identity
    assert identity is not None
    return CalibrationRecord(
        record_id=uuid.uuid4().hex,
        procedure=procedure,
        pen=PenInfo(
            identity.serial,
            identity.model,
            f"{identity.firmware_major}.{identity.firmware_minor}.{identity.firmware_patch}",
            identity.protocol_version,
            pen.url,
        ),
        technician=settings.technician,
        station=settings.station,
        software_version=software_version(),
        started_at=started,
        interval_days=settings.interval_days,
        reason="in progress (the process ended before the record was closed)",
        issuer=settings.issuer,
        owner=settings.owner,
        method=METHODS[procedure],
        method_revision=METHOD_REVISION,
        decision_rule=settings.decision_rule,
    )


def _values(data: CalData) -> CalValues:
    return CalValues(data.depth_gain_ppm, data.depth_offset_um, data.rate_gain_ppm)


def _snapshot(data: CalData) -> BankSnapshot:
    return BankSnapshot(
        _values(data), bool(data.valid), data.version, data.counter, data.written_at, data.crc
    )
