"""The benchmark's floor: the protocol's own work for the scenario's counts, measured in-run.

Figures are benchmarks, not tests: these check the counts the floor is built from (the fewest
rounds the protocol allows) and that its sum is what it says, not how fast anything is."""

from __future__ import annotations

import pytest

import micropen.sim.benchmark_floor as floor
from micropen.sim.benchmark_floor import measure_floor


@pytest.fixture(autouse=True)
def _few_rounds(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(floor, "_ROUNDS", 50)


def test_at_100_hz_a_batch_carries_8_samples_and_acks_feed_the_watchdog() -> None:
    figures = measure_floor(30, 100, 100, 0.125)
    # 180 000 samples, 8 a frame (the 240-byte body), none waiting over 100 ms
    assert figures["floor_batch_rounds"] == 22_500
    assert figures["floor_heartbeat_rounds"] == 0  # a batch every 80 ms: no heartbeat needed
    parts = (
        22_500 * (figures["floor_batch_round_us"] + figures["floor_batch_unpack_us"])
        + 180_000 * figures["floor_sample_pack_us"]
    ) / 1e6
    assert figures["floor_s"] == pytest.approx(parts)
    assert figures["ceiling_realtime_factor"] == pytest.approx(1800 / parts)


def test_at_5_hz_a_batch_waits_at_most_100_ms_and_heartbeats_fill_the_gaps() -> None:
    figures = measure_floor(1, 5, 100, 0.125)
    assert figures["floor_batch_rounds"] == 300  # 5 Hz × 100 ms < 1 sample: one a frame
    assert figures["floor_heartbeat_rounds"] == 480 - 300  # a write every 125 ms in all


def test_with_no_telemetry_the_floor_is_the_heartbeat() -> None:
    figures = measure_floor(30, 0, 100, 0.125)
    assert figures["floor_batch_rounds"] == 0
    assert figures["floor_heartbeat_rounds"] == 14_400
    assert figures["floor_s"] == pytest.approx(14_400 * figures["floor_heartbeat_round_us"] / 1e6)


def test_bench_sim_prints_the_run_and_its_floor_in_one_json_document() -> None:
    import json
    import subprocess
    import sys

    cli = [sys.executable, "-m", "micropen.tools.cli", "bench", "sim", "--minutes", "0.05"]
    done = subprocess.run([*cli, "--json"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    figures = json.loads(done.stdout)
    assert (
        figures["telemetry_samples"] >= 290 and figures["floor_batch_rounds"] == 38
    )  # 3 s: 300 samples, 8 a frame
    assert 0 < figures["ceiling_realtime_factor"] < float("inf")
