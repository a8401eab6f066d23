"""The benchmark runs end to end (a smoke check: speed targets are benchmarks, not tests)."""

from __future__ import annotations

import pytest

from micropen.protocol.errors import LocalProtocolError
from micropen.protocol.messages import RunOutcome
from micropen.sim.benchmark import measure_sim


def test_measure_sim_runs_a_short_treatment() -> None:
    figures = measure_sim(minutes=0.5, rate_sps=110, telemetry_hz=100, seed=3)
    assert figures["run_s"] == 30.0
    assert figures["outcome"] == RunOutcome.COMPLETED
    assert 30 * 100 - 2 <= figures["telemetry_samples"] <= 30 * 100 + 20
    assert 30 * 110 * 0.95 < figures["strokes"] < 30 * 110 * 1.05
    assert figures["simulated_s"] >= 30.0
    assert figures["realtime_factor"] == pytest.approx(figures["simulated_s"] / figures["wall_s"])


def test_measure_sim_refuses_a_rate_no_area_allows() -> None:
    with pytest.raises(LocalProtocolError, match="no treatment area allows 100"):
        measure_sim(minutes=0.1, rate_sps=100)  # not one of the six speed levels


def test_measure_sim_batched_and_single_carry_the_same_samples() -> None:
    batched = measure_sim(minutes=0.2, rate_sps=110, telemetry_hz=100, seed=3)
    singles = measure_sim(minutes=0.2, rate_sps=110, telemetry_hz=100, seed=3, batch=False)
    assert batched["telemetry_samples"] == singles["telemetry_samples"] >= 12 * 100 - 2
    assert batched["telemetry_missing"] == 0 and batched["telemetry_skipped"] == 0
    # 100 Hz, at most 8 samples a frame and 100 ms a sample may wait: 8 in each
    assert batched["telemetry_batches"] <= batched["telemetry_samples"] // 8 + 2
    assert singles["telemetry_batches"] == 0
    assert batched["strokes"] == singles["strokes"]
    assert batched["frames_pen_to_host"] < singles["frames_pen_to_host"] / 4
