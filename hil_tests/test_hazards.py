"""One test per hazard of shared/pen-spec.md, named after it, each proving the pen's own
control (the host's checks are bypassed wherever a host could be wrong or absent).

Traceability: hazard N → ``test_hazard_N_*`` here, plus the detailed conformance tests named in
each docstring.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest

from micropen.hil_tests.capture import Capture, capture
from micropen.hil_tests.drive import (
    HOME_UM,
    as_i32,
    check_invariants,
    pen_refuses,
    raw,
    start_run,
    steady_rate_of,
    strokes_accounted,
    wait_idle,
    wait_in_position,
)
from micropen.hil_tests.rawlink import RawLink, port_url, unchecked
from micropen.hil_tests.target import HilContext, mount, restore_calibration
from micropen.host import Pen
from micropen.host.errors import PenNotReady, PenRefused, SafetyLimitError
from micropen.host.pairing import HostKeys
from micropen.protocol import limits as L
from micropen.protocol.messages import (
    Ack,
    CalBank,
    CalCommit,
    CalWrite,
    Capability,
    CartridgeState,
    EmergencyStop,
    ErrorCode,
    EventCode,
    FaultCode,
    GetStatus,
    Nak,
    PenState,
    Run,
    RunMode,
    RunOutcome,
    RunReport,
    SetDepth,
    SetRate,
    SetTelemetry,
    SetWatchdog,
    SimParam,
    SimSet,
    Status,
    Stop,
    calibration_crc,
)

E = ErrorCode
TELEMETRY_HZ = 500


def _running(pen: Pen, cap: Capture, depth_um: int = 1000, area: str = "cheeks") -> int:
    pen.set_telemetry(TELEMETRY_HZ)
    rate = max(L.area_profile(area).allowed_rates())
    run_id = start_run(pen, area=area, depth_mm=depth_um / 1000, rate_sps=rate, seconds=20.0)
    wait_in_position(cap, depth_um)
    return run_id


def _assert_stopped_for_good(cap: Capture, stop_t_ms: int, strokes: int) -> None:
    """After the pen's stop instant: no stroke counted, never RUNNING again, home at the end."""
    after = [s for s in cap.telemetry() if s.t_ms > stop_t_ms]
    assert after, "no telemetry after the stop"
    assert all(s.state is not PenState.RUNNING for s in after)
    assert all(s.run_strokes == strokes for s in after), "strokes after the stop"
    assert after[-1].depth_um <= HOME_UM


# ------------------------------------------------------------------------------- hazard 1
def test_hazard_1_over_depth(runnable_pen: Pen, hil_measure: Callable[..., object]) -> None:
    """Needles deeper than commanded or than the area allows. Also: test_envelope.py."""
    pen = runnable_pen
    forehead = L.AREAS[L.Area.FOREHEAD]
    with capture(pen) as cap:
        run_id = _running(pen, cap, forehead.max_um, "forehead")
        with pytest.raises(SafetyLimitError):
            pen.set_depth((forehead.max_um + 10) / 1000, area="forehead")
        # the pen re-checks the area while running, whatever the host says
        assert pen_refuses(pen, SetDepth, forehead.max_um + 10, 0) is E.DEPTH_ABOVE_AREA_MAX
        assert pen_refuses(pen, SetDepth, L.DEPTH_MAX_UM + 10, 1) is E.DEPTH_OUT_OF_RANGE
        cap.wait_for(lambda: len(cap.telemetry()) > 50, 2.0, "telemetry while running")
        pen.stop()
        pen.wait_run_end(run_id, timeout=2)
    assert pen.status().depth_set_um == forehead.max_um
    deepest = max(s.depth_um for s in cap.telemetry())
    hil_measure("deepest_measured", deepest, "µm", 0, forehead.max_um + L.DEPTH_ACCEPT_TOL_UM)
    check_invariants(cap, depth_limit_um=forehead.max_um)


# ------------------------------------------------------------------------------- hazard 2
def _stop_by(pen: Pen, how: str) -> EventCode:
    if how == "stop":
        pen.stop()
        return EventCode.STOPPED
    if how == "emergency_stop":
        pen.emergency_stop()
        return EventCode.EMERGENCY_STOP
    if how == "stall":
        pen.sim_set(SimParam.STALL, 1)
        return EventCode.FAULT_RAISED
    pen.async_pen.go_silent(L.HEARTBEAT_DEFAULT_MS / 1000 + 0.3)
    return EventCode.WATCHDOG_EXPIRED


RUNAWAY = {
    "stop": RunOutcome.STOPPED,
    "emergency_stop": RunOutcome.EMERGENCY_STOP,
    "stall": RunOutcome.FAULT,
    "host_silent": RunOutcome.WATCHDOG,
}


@pytest.mark.parametrize(
    "how",
    [
        "stop",
        "emergency_stop",
        pytest.param("stall", marks=pytest.mark.hil_needs(Capability.DEVICE_FAULT_INJECTION)),
        "host_silent",
    ],
)
def test_hazard_2_runaway(runnable_pen: Pen, hil_measure: Callable[..., object], how: str) -> None:
    """Needles keep running after stop, e-stop, fault or loss of the host. Also:
    test_stop.py, test_watchdog.py."""
    pen = runnable_pen
    with capture(pen) as cap:
        run_id = _running(pen, cap)
        code = _stop_by(pen, how)
        stopped = cap.wait_event(code, 3.0)
        report = pen.wait_run_end(run_id, timeout=3)
        retracted = cap.wait_event(EventCode.RETRACTED, 2.0, run_id)
        cap.wait_telemetry(lambda s: s.t_ms > retracted.t_ms + 20, 3.0, "telemetry at home")
    assert report.outcome is RUNAWAY[how]
    hil_measure("retract", retracted.t_ms - stopped.t_ms, "ms", 0, L.RETRACT_MAX_MS)
    _assert_stopped_for_good(cap, stopped.t_ms, report.strokes)
    if how == "stall":
        assert [f.fault for f in cap.faults()] == [FaultCode.STALL]
        stall_ms = stopped.t_ms - _event_t(cap, EventCode.SIM_PARAMETER_CHANGED)
        # over-current for more than STALL_MAX_MS, seen at the 10 ms control ticks
        hil_measure("stall_detect", stall_ms, "ms", L.STALL_MAX_MS, L.STALL_MAX_MS + 30)
        pen.sim_set(SimParam.STALL, 0)
    assert pen.status().state is not PenState.RUNNING


def _event_t(cap: Capture, code: EventCode) -> int:
    return cap.events(code)[-1].t_ms


# ------------------------------------------------------------------------------- hazard 3
def test_hazard_3_stroke_accounting(runnable_pen: Pen) -> None:
    """More strokes than commanded, or strokes not counted. Also: test_runs.py (exact
    stroke- and duration-bounded runs) and test_link_robustness.py (through a faulty link)."""
    pen = runnable_pen
    before = pen.status()
    with capture(pen) as cap:
        run_id = _running(pen, cap)
        cap.wait_telemetry(
            lambda s: s.state is PenState.RUNNING and s.run_strokes >= 30, 3.0, "30 strokes"
        )
        pen.stop()
        report = pen.wait_run_end(run_id, timeout=2)
        started = cap.wait_event(EventCode.RUN_STARTED, 1.0, run_id)
        # a sample at rest *after this run* (samples come in batches up to 100 ms late; one at
        # rest from before the run proves nothing)
        cap.wait_telemetry(
            lambda s: s.state is PenState.IDLE and s.t_ms > started.t_ms, 2.0, "the pen at rest"
        )
    after = wait_idle(pen)
    assert report.outcome is RunOutcome.STOPPED and report.strokes >= 30
    strokes_accounted(before, after, report)
    assert max(s.run_strokes for s in cap.telemetry() if s.t_ms > started.t_ms) == report.strokes
    assert cap.telemetry()[-1].cartridge_strokes == after.cartridge_strokes


# ------------------------------------------------------------------------------- hazard 4
@pytest.mark.hil_destructive
@pytest.mark.hil_needs(Capability.SIMULATOR)
@pytest.mark.parametrize(
    ("kind", "expected"),
    [
        ("absent", E.NO_CARTRIDGE),
        ("used", E.CARTRIDGE_USED),
        ("expired", E.CARTRIDGE_EXPIRED),
        ("unknown", E.CARTRIDGE_UNKNOWN),
    ],
)
def test_hazard_4_cartridge_refused(
    pen: Pen, hil_context: HilContext, kind: str, expected: ErrorCode
) -> None:
    """A used, expired or unknown cartridge runs. Also: test_cartridge.py."""
    factory = hil_context.cartridges
    if kind == "used":
        cartridge = factory.fresh()
        mount(pen, *cartridge)
        pen.wait_run_end(
            start_run(pen, area="neck", depth_mm=0.5, rate_sps=90, strokes=5), timeout=3
        )
        mount(pen, 0, "", 0, 0)
        state = mount(pen, *cartridge)
    elif kind == "absent":
        state = mount(pen, 0, "", 0, 0)
    else:
        state = mount(pen, *(factory.expired() if kind == "expired" else factory.unknown()))
    expected_state = CartridgeState.ABSENT if kind == "absent" else CartridgeState.REFUSED
    assert state == expected_state
    run_id = wait_idle(pen).run_id
    with pytest.raises(PenNotReady, match="cartridge"):  # the host's own check
        start_run(pen, area="neck", depth_mm=0.5, rate_sps=90, strokes=5)
    # and past the host, straight to the pen
    assert pen_refuses(pen, Run, int(L.Area.NECK), RunMode.STROKES, 5, 0) is expected
    assert pen.status().run_id == run_id


# ------------------------------------------------------------------------------- hazard 5
@pytest.mark.hil_destructive
@pytest.mark.hil_needs(Capability.SIMULATOR, Capability.DEVICE_FAULT_INJECTION)
def test_hazard_5_fluid_ingress(runnable_pen: Pen, hil_measure: Callable[..., object]) -> None:
    """Fluid ingress into the handpiece not acted on."""
    pen = runnable_pen
    cartridge_id = pen.status().cartridge_id
    with capture(pen) as cap:
        run_id = _running(pen, cap)
        pen.sim_set(SimParam.FLUID_INGRESS, 1)
        raised = cap.wait_event(EventCode.FAULT_RAISED, 2.0)
        report = pen.wait_run_end(run_id, timeout=2)
        retired = cap.wait_event(EventCode.CARTRIDGE_RETIRED, 2.0)
        retracted = cap.wait_event(EventCode.RETRACTED, 2.0, run_id)
    assert report.outcome is RunOutcome.FAULT
    assert [f.fault for f in cap.faults()] == [FaultCode.FLUID_INGRESS]
    assert retired.value == as_i32(cartridge_id)
    hil_measure("retract", retracted.t_ms - raised.t_ms, "ms", 0, L.RETRACT_MAX_MS)
    with pytest.raises(PenRefused) as refused:
        pen.clear_fault()  # still wet
    assert refused.value.code is E.FAULT_ACTIVE
    pen.sim_set(SimParam.FLUID_INGRESS, 0)
    pen.clear_fault()
    assert pen.cartridge().state is CartridgeState.RETIRED
    assert pen_refuses(pen, Run, int(L.Area.CHEEKS), RunMode.STROKES, 5, 0) is E.CARTRIDGE_USED


# ------------------------------------------------------------------------------- hazard 6
@pytest.mark.hil_needs(Capability.DEVICE_FAULT_INJECTION)
def test_hazard_6_depth_drift_faults(runnable_pen: Pen, hil_measure: Callable[..., object]) -> None:
    """Depth drifts out of tolerance unnoticed: a depth-sensor drift beyond ±0.15 mm faults."""
    pen = runnable_pen
    with capture(pen) as cap:
        run_id = _running(pen, cap)
        pen.sim_set(SimParam.DEPTH_DRIFT_UM, L.DEPTH_FAULT_TOL_UM + 50)
        changed = cap.wait_event(EventCode.SIM_PARAMETER_CHANGED, 2.0)
        raised = cap.wait_event(EventCode.FAULT_RAISED, 2.0)
        report = pen.wait_run_end(run_id, timeout=2)
        retracted = cap.wait_event(EventCode.RETRACTED, 2.0, run_id)
    assert [f.fault for f in cap.faults()] == [FaultCode.DEPTH_ERROR]
    assert report.outcome is RunOutcome.FAULT
    hil_measure("drift_detect", raised.t_ms - changed.t_ms, "ms", 0, 20)
    hil_measure("retract", retracted.t_ms - raised.t_ms, "ms", 0, L.RETRACT_MAX_MS)
    pen.sim_set(SimParam.DEPTH_DRIFT_UM, 0)
    pen.clear_fault()


@pytest.mark.hil_needs(Capability.SIMULATOR)
def test_hazard_6_rate_drift_is_noticed(
    runnable_pen: Pen, hil_context: HilContext, hil_measure: Callable[..., object]
) -> None:
    """Stroke rate drifts out of tolerance unnoticed: a motor 8 % fast is caught by the rate
    verification this suite runs (the same measurement as test_runs.py), and the pen itself
    stops the run with RATE_ERROR (beyond ±5 % for 100 ms once at speed)."""
    pen = runnable_pen
    pen.sim_set(SimParam.SPEED_GAIN_ERROR_PPM, 80_000 - hil_context.calibration.rate_gain_ppm)
    pen.set_telemetry(200)
    try:
        with capture(pen) as cap:
            run_id = start_run(pen, area="scalp", depth_mm=1.0, rate_sps=90, seconds=3)
            report = pen.wait_run_end(run_id, timeout=5)
        error = steady_rate_of(cap, 90)
        hil_measure("rate_error_injected_8pct", error, "%", check=False)
        assert abs(error) > 5.0, "an 8 % rate drift passed the ±5 % check"
        assert report.outcome is RunOutcome.FAULT and report.duration_ms < 1000
        assert [f.fault for f in cap.faults()] == [FaultCode.RATE_ERROR]
    finally:  # the suite puts the simulator parameter back after the test
        wait_idle(pen)
        pen.clear_fault()


# ------------------------------------------------------------------------------- hazard 7
@pytest.mark.hil_destructive
@pytest.mark.hil_needs(Capability.CALIBRATION_STORAGE)
def test_hazard_7_calibration_tampering_refused(pen: Pen) -> None:
    """Calibration data altered, corrupted or downgraded: bad CRCs, out-of-range values and a
    lower counter are refused, and nothing in use changes."""
    active = pen.cal_read(CalBank.ACTIVE)
    fields = (active.version, 1000, 10, -1000, active.written_at, active.counter + 1)
    crc = calibration_crc(*fields)
    assert pen_refuses(pen, CalWrite, *fields, crc ^ 1) is E.CALIBRATION_CRC_MISMATCH
    too_big = (active.version, L.CAL_GAIN_PPM_LIMIT + 1, 0, 0, 0, active.counter + 1)
    assert (
        pen_refuses(pen, CalWrite, *too_big, calibration_crc(*too_big))
        is E.CALIBRATION_OUT_OF_RANGE
    )
    assert isinstance(raw(pen, CalWrite, *fields, crc), Ack)
    assert pen_refuses(pen, CalCommit, crc ^ 1) is E.CALIBRATION_CRC_MISMATCH
    old = (active.version, 0, 0, 0, active.written_at, active.counter)  # not newer: a downgrade
    raw(pen, CalWrite, *old, calibration_crc(*old))
    assert pen_refuses(pen, CalCommit, calibration_crc(*old)) is E.CALIBRATION_DOWNGRADE
    after = pen.cal_read(CalBank.ACTIVE)
    assert (after.counter, after.crc, after.valid) == (active.counter, active.crc, 1)


@pytest.mark.hil_destructive
@pytest.mark.hil_needs(Capability.SIMULATOR, Capability.DEVICE_FAULT_INJECTION)
def test_hazard_7_corrupted_calibration_blocks_runs(pen: Pen, hil_context: HilContext) -> None:
    """A calibration record whose CRC no longer matches is reported and never used."""
    with capture(pen) as cap:
        pen.sim_set(SimParam.CALIBRATION_CORRUPT, 1)
        cap.wait_for(lambda: cap.faults(), 2.0, "the pen reporting its corrupt calibration")
    assert [f.fault for f in cap.faults()] == [FaultCode.CALIBRATION_CORRUPT]
    status = pen.status()
    assert (status.calibrated, status.fault) == (0, FaultCode.CALIBRATION_CORRUPT)
    assert pen.cal_read(CalBank.ACTIVE).valid == 0
    raw(pen, SetDepth, 500, 0)
    raw(pen, SetRate, 90)
    assert pen_refuses(pen, Run, int(L.Area.FOREHEAD), RunMode.STROKES, 5, 0) is E.UNCALIBRATED
    restore_calibration(hil_context, pen)
    assert pen.status().calibrated == 1


# ------------------------------------------------------------------------------- hazard 8
def _raw_link(hil_context: HilContext, *, paired: bool = False) -> RawLink:
    """The pen's port opened by a bare link: this bench's paired host, or any other party."""
    if port_url(hil_context.url) is None:
        pytest.skip(f"{hil_context.url} is not a serial or socket port a second party can open")
    hil_context.release()
    return RawLink(hil_context.url, keys=HostKeys() if paired else None)


def test_hazard_8_unauthenticated_party_is_denied(pen: Pen, hil_context: HilContext) -> None:
    """A party that opened the pen's port but is not paired with it: nothing but a stop is
    obeyed before the handshake, and after it only reads (identity, status) and stops —
    NOT_AUTHORIZED for the rest; the pen hands it no records, and the paired host later gets
    a SECURITY_DENIED event per refusal (deny by default)."""
    denied = [
        lambda c: unchecked(SetDepth, c, 500, 0),
        lambda c: unchecked(SetRate, c, 90),
        lambda c: unchecked(Run, c, int(L.Area.FOREHEAD), RunMode.STROKES, 5, 0),
        lambda c: unchecked(SetWatchdog, c, 2000),
        lambda c: unchecked(SetTelemetry, c, 100),
        lambda c: unchecked(CalCommit, c, 0),
        lambda c: unchecked(SimSet, c, SimParam.AMBIENT_DC, 250),
    ]
    before = pen.status()  # ready: retracted, default watchdog, no telemetry
    with _raw_link(hil_context) as link:
        link.connect()
        for build in [*denied, lambda c: unchecked(GetStatus, c)]:
            reply = link.request(build)
            assert isinstance(reply, Nak) and reply.error is E.NOT_CONNECTED, reply
        link.hello()  # a handshake is not a pairing
        for build in denied:
            reply = link.request(build)
            assert isinstance(reply, Nak) and reply.error is E.NOT_AUTHORIZED, reply
        assert isinstance(link.request(lambda c: GetStatus(c)), Status)  # reading is allowed
        for stop in (Stop, EmergencyStop):  # stopping is safe whoever asks
            assert isinstance(link.request(lambda c, s=stop: unchecked(s, c), urgent=True), Ack)
        assert not [e for e in link.notifications if _is_denial(e)]  # records: paired only
    with RawLink(hil_context.url, keys=HostKeys()) as paired:  # the bench's own host
        paired.connect()
        paired.hello()
        paired.wait_for(
            lambda: len([e for e in paired.notifications if _is_denial(e)]) >= 2 * len(denied),
            "a SECURITY_DENIED event per refused command",
        )
        status = paired.request(lambda c: GetStatus(c))
        assert isinstance(status, Status)
        unchanged = ("depth_set_um", "rate_set_sps", "watchdog_ms", "telemetry_hz", "run_id")
        for name in unchanged:
            assert getattr(status, name) == getattr(before, name), f"{name} changed"
        assert status.fault is FaultCode.EMERGENCY_STOP  # the stop was obeyed


def _is_denial(message: object) -> bool:
    return _code(message) is EventCode.SECURITY_DENIED


# ------------------------------------------------------------------------------- hazard 9
def test_hazard_9_retransmitted_command_runs_once(
    hil_context: HilContext, runnable_pen: Pen
) -> None:
    """A command executed twice because a frame was retransmitted: the same frame written
    twice, and the same command re-sent in a new link epoch, each start one run."""
    run_id_before = runnable_pen.status().run_id
    runnable_pen.set_depth(0.5, area="forehead")
    runnable_pen.set_rate(90, area="forehead")
    with _raw_link(hil_context, paired=True) as link:
        link.connect()
        link.hello()
        run = Run(link.next_cmd_id(), int(L.Area.FOREHEAD), RunMode.STROKES, 5, 0)
        link.link.send(run, time.monotonic())
        frame = link.link.data_to_send(time.monotonic())
        link._port.write(frame)
        link._port.write(frame)  # a retransmission the pen already has
        link.wait_for(lambda: run.cmd_id in link.replies, "the Run's Ack")
        first = link.replies.pop(run.cmd_id)
        assert isinstance(first, Ack) and first.value == run_id_before + 1
        link.wait_for(lambda: _report_seen(link, first.value), "the run's report", timeout=3)
        link.connect()  # a new epoch, as after a reconnect: the host re-sends its pending Run
        link.hello()
        again = link.request_as(run)
        assert isinstance(again, Ack) and again.value == first.value, again
        status = link.request(lambda c: GetStatus(c))
        assert isinstance(status, Status) and status.run_id == first.value
        started = [e for e in link.notifications if _code(e) is EventCode.RUN_STARTED]
        assert len(started) == 1


def _code(message: object) -> object:
    return getattr(message, "code", None)


def _report_seen(link: RawLink, run_id: int) -> bool:
    return any(isinstance(m, RunReport) and m.run_id == run_id for m in link.notifications)
