"""Runs bounded by stroke count and by duration: the count is exact wherever the pen keeps
it, and the stroke rate measured from the telemetry is within ±5 % of the set rate."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from micropen.hil_tests.capture import capture, steady_rate
from micropen.hil_tests.drive import check_invariants, start_run, strokes_accounted
from micropen.host import Pen
from micropen.protocol import limits as L
from micropen.protocol.messages import PenState, RunMode, RunOutcome

TELEMETRY_HZ = 200
RATE_TOL_PCT = L.RATE_ACCEPT_TOL_PCT
DURATION_TOL_MS = 10  # one control tick of the reference firmware


@pytest.mark.parametrize(("area", "rate", "strokes"), [("cheeks", 110, 180), ("forehead", 50, 60)])
def test_stroke_bounded_run_is_exact(
    runnable_pen: Pen, hil_measure: Callable[..., object], area: str, rate: int, strokes: int
) -> None:
    pen = runnable_pen
    before = pen.status()
    pen.set_telemetry(TELEMETRY_HZ)
    with capture(pen) as cap:
        run_id = start_run(pen, area=area, depth_mm=0.5, rate_sps=rate, strokes=strokes)
        report = pen.wait_run_end(run_id, timeout=strokes / rate + 3)
        ran_until = max(s.t_ms for s in cap.telemetry() if s.state is PenState.RUNNING)
        last = cap.wait_telemetry(
            lambda s: s.state is PenState.IDLE and s.t_ms > ran_until, 2.0, "telemetry at rest"
        )
    assert (report.outcome, report.mode, report.strokes) == (
        RunOutcome.COMPLETED,
        RunMode.STROKES,
        strokes,
    )
    assert last.run_strokes == strokes
    strokes_accounted(before, pen.status(), report)
    check_invariants(cap, depth_limit_um=500, run_targets={run_id: (RunMode.STROKES, strokes)})
    counted, sensed = steady_rate(cap.telemetry())
    hil_measure("rate_error_counted", 100 * (counted / rate - 1), "%", -RATE_TOL_PCT, RATE_TOL_PCT)
    hil_measure("rate_error_sensor", 100 * (sensed / rate - 1), "%", -RATE_TOL_PCT, RATE_TOL_PCT)


def test_duration_bounded_run_is_exact(
    runnable_pen: Pen, hil_measure: Callable[..., object]
) -> None:
    pen, rate, seconds = runnable_pen, 90, 1.2
    before = pen.status()
    pen.set_telemetry(TELEMETRY_HZ)
    with capture(pen) as cap:
        run_id = start_run(pen, area="scalp", depth_mm=1.0, rate_sps=rate, seconds=seconds)
        report = pen.wait_run_end(run_id, timeout=seconds + 3)
    assert (report.outcome, report.mode, report.target) == (
        RunOutcome.COMPLETED,
        RunMode.DURATION,
        round(seconds * 1000),
    )
    hil_measure(
        "duration_error",
        report.duration_ms - seconds * 1000,
        "ms",
        -DURATION_TOL_MS,
        DURATION_TOL_MS,
    )
    strokes_accounted(before, pen.status(), report)
    expected = rate * seconds
    hil_measure(
        "strokes_vs_rate_x_time",
        100 * (report.strokes / expected - 1),
        "%",
        -2 * RATE_TOL_PCT,  # spin-up from rest costs a few strokes in a short run
        RATE_TOL_PCT,
    )
    counted, _ = steady_rate(cap.telemetry())
    hil_measure("rate_error_counted", 100 * (counted / rate - 1), "%", -RATE_TOL_PCT, RATE_TOL_PCT)
    check_invariants(cap, depth_limit_um=1000)


def test_second_run_on_a_locked_cartridge_counts_on(runnable_pen: Pen) -> None:
    pen = runnable_pen
    first_id = start_run(pen, area="neck", depth_mm=0.5, rate_sps=90, strokes=20)
    first = pen.wait_run_end(first_id, timeout=3)
    middle = pen.status()
    second_id = start_run(pen, area="neck", depth_mm=0.5, rate_sps=90, strokes=30)
    second = pen.wait_run_end(second_id, timeout=3)
    assert second_id == first_id + 1
    assert (first.strokes, second.strokes) == (20, 30)
    strokes_accounted(middle, pen.status(), second)
