"""The heartbeat watchdog: a host that goes silent while the pen runs must not leave the
needles going. The host is silenced with ``AsyncPen.go_silent`` (it then sends nothing at all,
not even acknowledgements), and the stop is timed on the pen's clock, related to the host's
through the telemetry stream.

Limit: the pen stops within the watchdog time ± WATCHDOG_MARGIN_MS of the host's last frame
(the margin covers the clock mapping and one telemetry period), and the needles are home
within RETRACT_MAX_MS after that.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest

from micropen.hil_tests.capture import capture
from micropen.hil_tests.drive import HOME_UM, start_run, wait_in_position
from micropen.host import Pen
from micropen.protocol import limits as L
from micropen.protocol import timing as T
from micropen.protocol.messages import EventCode, FaultCode, PenState, RunOutcome

WATCHDOG_MARGIN_MS = T.WATCHDOG_MARGIN_MS
TELEMETRY_HZ = L.TELEMETRY_MAX_HZ


@pytest.mark.parametrize("watchdog_ms", [200, L.HEARTBEAT_DEFAULT_MS])
def test_silent_host_stops_the_pen(
    runnable_pen: Pen, hil_measure: Callable[..., object], watchdog_ms: int
) -> None:
    pen = runnable_pen
    pen.set_watchdog(watchdog_ms)
    pen.set_telemetry(TELEMETRY_HZ)
    with capture(pen) as cap:
        run_id = start_run(pen, area="cheeks", depth_mm=1.0, rate_sps=110, seconds=20.0)
        wait_in_position(cap, 1000)
        silent_from = time.monotonic()
        pen.async_pen.go_silent(watchdog_ms / 1000 + 0.3)
        expired = cap.wait_event(EventCode.WATCHDOG_EXPIRED, watchdog_ms / 1000 + 2)
        retracted = cap.wait_event(EventCode.RETRACTED, 2.0, run_id)
        offset = cap.pen_to_host_offset()
        report = pen.wait_run_end(run_id, timeout=3)
        cap.wait_telemetry(lambda s: s.t_ms > expired.t_ms + 60, 3.0, "telemetry after the stop")
    stop_after_ms = (expired.t_ms / 1000 + offset - silent_from) * 1000
    low, high = watchdog_ms - WATCHDOG_MARGIN_MS, watchdog_ms + WATCHDOG_MARGIN_MS
    hil_measure("stop_after_silence", stop_after_ms, "ms", low, high)
    hil_measure("pen_saw_silence", expired.value, "ms", watchdog_ms, high)
    # the retract is timed by the pen's own RETRACTED event here (test_stop times it from
    # telemetry); a sample taken in the very millisecond the watchdog expired still shows the
    # run, so "after" starts past it
    hil_measure("retract", retracted.t_ms - expired.t_ms, "ms", 0, L.RETRACT_MAX_MS)
    after = [s for s in cap.telemetry() if s.t_ms > expired.t_ms]
    assert after and all(s.state is not PenState.RUNNING for s in after)
    assert all(s.run_strokes == report.strokes for s in after), "strokes after the stop"
    assert after[-1].depth_um <= HOME_UM
    assert report.outcome is RunOutcome.WATCHDOG
    assert [f.fault for f in cap.faults()] == [FaultCode.WATCHDOG]
    status = pen.status()  # the host speaks again: the pen answers, the fault is latched
    assert (status.state, status.fault) == (PenState.FAULT, FaultCode.WATCHDOG)
    assert status.run_strokes == report.strokes
    pen.clear_fault()


def test_heartbeats_keep_a_run_going(runnable_pen: Pen) -> None:
    """At the shortest watchdog, with nothing but heartbeats on the line, a run completes."""
    pen = runnable_pen
    pen.set_watchdog(L.HEARTBEAT_MIN_MS)
    with capture(pen) as cap:
        run_id = start_run(pen, area="forehead", depth_mm=0.5, rate_sps=90, seconds=1.0)
        report = pen.wait_run_end(run_id, timeout=4)
    assert report.outcome is RunOutcome.COMPLETED, report
    assert not cap.faults()
