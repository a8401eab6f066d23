"""Telemetry: samples arrive at the configured rate, with no gap, and every field is present
and plausible (state, depth at the set depth, rate near the set rate, counters monotonic)."""

from __future__ import annotations

import itertools
from collections.abc import Callable

import pytest

from micropen.hil_tests.capture import capture
from micropen.hil_tests.drive import start_run, wait_in_position
from micropen.host import Pen
from micropen.protocol import limits as L
from micropen.protocol.messages import Capability, PenState, Telemetry

RUN_S = 0.8
RATE_TOL_PCT = 1.0  # samples are scheduled on the pen's clock: the count is nearly exact
DEPTH_UM, RATE_SPS = 800, 90
SPIN_UP_MS = 150


def _check_sample(s: Telemetry, cartridge_id: int, steady_from_ms: int) -> None:
    assert s.state in (PenState.RUNNING, PenState.STOPPING, PenState.IDLE), s
    assert s.cartridge_id == cartridge_id
    assert 0 <= s.depth_um <= L.DEPTH_MAX_UM + L.DEPTH_FAULT_TOL_UM
    assert L.BATTERY_STOP_MV <= s.battery_mv <= 4300
    assert 0 <= s.temperature_dc < L.TEMP_FAULT_DC
    if s.state is PenState.RUNNING and s.t_ms >= steady_from_ms:
        assert abs(s.depth_um - DEPTH_UM) <= L.DEPTH_ACCEPT_TOL_UM, s
        assert abs(s.rate_csps / 100 - RATE_SPS) <= RATE_SPS * L.RATE_ACCEPT_TOL_PCT / 100, s


@pytest.mark.hil_needs(Capability.TELEMETRY)
@pytest.mark.parametrize("hz", [100, 500])
def test_telemetry_rate_and_completeness(
    runnable_pen: Pen, hil_measure: Callable[..., object], hz: int
) -> None:
    pen = runnable_pen
    cartridge_id = pen.status().cartridge_id
    pen.set_telemetry(hz)
    with capture(pen) as cap:
        run_id = start_run(
            pen, area="neck", depth_mm=DEPTH_UM / 1000, rate_sps=RATE_SPS, seconds=RUN_S
        )
        wait_in_position(cap, DEPTH_UM)
        report = pen.wait_run_end(run_id, timeout=RUN_S + 3)
        pen.set_telemetry(0)
    samples = cap.telemetry()
    times = [s.t_ms for s in samples]
    gaps = [b - a for a, b in itertools.pairwise(times)]
    period = 1000 / hz
    span_s = (times[-1] - times[0]) / 1000
    hil_measure("sample_rate_error", 100 * ((len(samples) - 1) / span_s / hz - 1), "%",
                -RATE_TOL_PCT, RATE_TOL_PCT)  # fmt: skip
    hil_measure("largest_gap", max(gaps), "ms", 0, period + 1)
    assert min(gaps) >= period - 1, "samples closer than the period"
    steady_from = min(s.t_ms for s in samples if s.state is PenState.RUNNING) + SPIN_UP_MS
    for s in samples:
        _check_sample(s, cartridge_id, steady_from)
    running = [s.run_strokes for s in samples if s.state is PenState.RUNNING]
    assert running == sorted(running), "the stroke counter went backwards"
    assert running[-1] <= report.strokes
    lifetime = [s.cartridge_strokes for s in samples]
    assert lifetime == sorted(lifetime)


@pytest.mark.hil_needs(Capability.TELEMETRY)
def test_telemetry_off_means_no_samples(pen: Pen) -> None:
    pen.set_telemetry(200)
    with capture(pen) as cap:
        cap.wait_for(lambda: len(cap.telemetry()) >= 5, 2.0, "telemetry at 200 Hz")
        pen.set_telemetry(0)
        pen.status()  # the Ack and this reply are behind every sample sent before
        seen = len(cap.telemetry())
        pen.status()
        pen.status()
    assert len(cap.telemetry()) == seen
    assert pen.status().telemetry_hz == 0
