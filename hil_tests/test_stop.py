"""Stop and emergency stop: how fast the needles are home, measured on the pen's own clock from
its telemetry, and how long the round trip of an emergency stop takes from the host.

Limits: needles home within RETRACT_MAX_MS (50 ms) of the stop (pen-spec); the emergency stop
is acknowledged — motor off, needles on their way home — within ESTOP_ACK_LIMIT_MS of the
call, a limit this suite states for a pen on a local link (serial or USB).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

from micropen.hil_tests.capture import Capture, capture
from micropen.hil_tests.drive import (
    first_not_running,
    retract_ms,
    start_run,
    wait_idle,
    wait_in_position,
)
from micropen.host import Pen
from micropen.protocol import limits as L
from micropen.protocol import timing as T
from micropen.protocol.messages import (
    EventCode,
    FaultCode,
    PenState,
    RunOutcome,
)

TELEMETRY_HZ = L.TELEMETRY_MAX_HZ  # 1 ms resolution for the retract measurement
ESTOP_ACK_LIMIT_MS = float(T.ESTOP_ACK_MAX_MS)
ESTOP_ROUNDS = 8
OVERRIDE = "HIL: deepest setting, the longest retract"


def _deep_run(pen: Pen, cap: Capture) -> int:
    run_id = start_run(  # the deepest setting: the longest way home
        pen, area="stretch_marks", depth_mm=2.5, rate_sps=110, seconds=20.0,
        override_reason=OVERRIDE,
    )  # fmt: skip
    wait_in_position(cap, 2500)
    return run_id


def _strokes_after_stop(cap: Capture, stopped_t_ms: int) -> int:
    """Strokes counted after the pen left RUNNING: must be none."""
    after = [s.run_strokes for s in cap.telemetry() if s.t_ms >= stopped_t_ms]
    return max(after) - min(after) if after else 0


def test_stop_retracts_within_limit(runnable_pen: Pen, hil_measure: Callable[..., object]) -> None:
    pen = runnable_pen
    pen.set_telemetry(TELEMETRY_HZ)
    with capture(pen) as cap:
        run_id = _deep_run(pen, cap)
        t0 = time.monotonic()
        pen.stop()
        ack_ms = (time.monotonic() - t0) * 1000
        report = pen.wait_run_end(run_id, timeout=2)
        stopped = cap.wait_event(EventCode.STOPPED, 2.0, run_id)
        retracted = cap.wait_event(EventCode.RETRACTED, 2.0, run_id)
        cap.wait_telemetry(
            lambda s: s.t_ms > retracted.t_ms and s.depth_um <= 10, 2.0, "telemetry at home"
        )
    assert report.outcome is RunOutcome.STOPPED
    leave = first_not_running(cap.telemetry(), stopped.t_ms - 1)
    hil_measure("stop_ack", ack_ms, "ms", 0, ESTOP_ACK_LIMIT_MS)
    hil_measure(
        "retract_telemetry", retract_ms(cap.telemetry(), stopped.t_ms), "ms", 0, L.RETRACT_MAX_MS
    )
    hil_measure("retract_pen_event", retracted.value, "ms", 0, L.RETRACT_MAX_MS)
    hil_measure("state_change_delay", leave.t_ms - stopped.t_ms, "ms", 0, 2)
    assert _strokes_after_stop(cap, leave.t_ms) == 0
    assert report.strokes == pen.status().run_strokes


def test_emergency_stop_round_trip_and_retract(
    runnable_pen: Pen, hil_measure: Callable[..., object]
) -> None:
    pen = runnable_pen
    pen.set_telemetry(TELEMETRY_HZ)
    acks, retracts = [], []
    for _ in range(ESTOP_ROUNDS):
        with capture(pen) as cap:
            run_id = _deep_run(pen, cap)
            t0 = time.monotonic()
            pen.emergency_stop()
            acks.append((time.monotonic() - t0) * 1000)
            report = pen.wait_run_end(run_id, timeout=2)
            event = cap.wait_event(EventCode.EMERGENCY_STOP, 2.0, run_id)
            retracted = cap.wait_event(EventCode.RETRACTED, 2.0, run_id)
            cap.wait_telemetry(
                lambda s, r=retracted: s.t_ms > r.t_ms and s.depth_um <= 10, 2.0, "home"
            )
        assert report.outcome is RunOutcome.EMERGENCY_STOP
        assert [f.fault for f in cap.faults()] == [FaultCode.EMERGENCY_STOP]
        retracts.append(retract_ms(cap.telemetry(), event.t_ms))
        assert (
            _strokes_after_stop(cap, first_not_running(cap.telemetry(), event.t_ms - 1).t_ms) == 0
        )
        status = pen.status()
        assert (status.state, status.fault) == (PenState.FAULT, FaultCode.EMERGENCY_STOP)
        pen.clear_fault()
        wait_idle(pen)
    hil_measure("estop_ack_median", statistics.median(acks), "ms", 0, ESTOP_ACK_LIMIT_MS)
    hil_measure("estop_ack_max", max(acks), "ms", 0, 2 * ESTOP_ACK_LIMIT_MS)
    hil_measure("estop_retract_max", max(retracts), "ms", 0, L.RETRACT_MAX_MS)


def test_emergency_stop_latches_until_cleared(runnable_pen: Pen) -> None:
    pen = runnable_pen
    pen.emergency_stop()
    status = pen.status()
    assert (status.state, status.fault) == (PenState.FAULT, FaultCode.EMERGENCY_STOP)
    from micropen.hil_tests.drive import pen_refuses
    from micropen.host.errors import PenNotReady
    from micropen.protocol.messages import ErrorCode, Run, RunMode

    try:
        start_run(pen, area="forehead", depth_mm=0.5, rate_sps=90, strokes=10)
    except PenNotReady as refused:  # the host's own check
        assert "latched fault" in str(refused)
    else:
        raise AssertionError("a run started with an emergency stop latched")
    refusal = pen_refuses(pen, Run, int(L.Area.FOREHEAD), RunMode.STROKES, 10, 0)
    assert refusal is ErrorCode.FAULT_ACTIVE  # and the pen's
    pen.clear_fault()
    run_id = start_run(pen, area="forehead", depth_mm=0.5, rate_sps=90, strokes=10)
    assert pen.wait_run_end(run_id, timeout=3).strokes == 10
